package cart_test

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/grpcserver"
	"github.com/handoff-dev/handoff/internal/testenv"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	"github.com/handoff-dev/handoff/services/cart"
)

func TestWithTokenVerificationTheTokenNotTheMetadataNamesTheCustomer(t *testing.T) {
	e := newEnv(t)
	keys, err := auth.DevKeySet(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// The cart as the stack serves it: Handoff's gRPC server verifying tokens.
	srv := grpcserver.New(testenv.Logger(t), keys)
	e.cart.RegisterGRPC(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(context.Background(), lis, time.Second) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := cartv1.NewCartServiceClient(conn)

	token := func(subject string, role auth.Role) context.Context {
		tok, err := keys.Issue(auth.Principal{Subject: subject, Role: role}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+tok)
	}

	res, err := client.CreateCart(token("alice", auth.RoleCustomer), &cartv1.CreateCartRequest{})
	if err != nil {
		t.Fatalf("CreateCart with alice's token: %v", err)
	}
	c := res.GetCart()
	if c.GetCustomerId() != "alice" {
		t.Fatalf("cart belongs to %q, want alice (the token's subject)", c.GetCustomerId())
	}
	// Bob's token naming alice in metadata still acts as bob.
	spoof := metadata.AppendToOutgoingContext(token("bob", auth.RoleCustomer), cart.CustomerIDMetadata, "alice")
	_, err = client.GetCart(spoof, &cartv1.GetCartRequest{CartId: c.GetId()})
	wantCode(t, "bob's token with alice's metadata", err, codes.NotFound)
	// Metadata without a token is refused.
	_, err = client.GetCart(e.as("alice"), &cartv1.GetCartRequest{CartId: c.GetId()})
	wantCode(t, "metadata without a token", err, codes.Unauthenticated)
	// An admin token is not a shopper.
	_, err = client.GetCart(token("ops", auth.RoleAdmin), &cartv1.GetCartRequest{CartId: c.GetId()})
	wantCode(t, "admin token", err, codes.PermissionDenied)

	if _, err := client.GetCart(token("alice", auth.RoleCustomer), &cartv1.GetCartRequest{CartId: c.GetId()}); err != nil {
		t.Fatalf("alice reads her cart: %v", err)
	}
}
