package checkout_test

import (
	"context"
	"encoding/base64"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/grpcserver"
	"github.com/handoff-dev/handoff/internal/testenv"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/services/cart"
)

// A shopper whose verified token names a customer id the order path cannot take must be told
// so up front, not let build a cart that every checkout then refuses naming a field
// (customer_id) the request does not have.
func TestACustomerTheCartAcceptsCanCheckOut(t *testing.T) {
	e := newEnv(t)
	sku := e.skus(1)[0]

	// The deployment's key set (HANDOFF_JWT_KEYS), which its identity provider signs with too.
	key := []byte(strings.Repeat("k", 32))
	keys, err := auth.ParseKeySet("idp:" + base64.StdEncoding.EncodeToString(key))
	if err != nil {
		t.Fatal(err)
	}
	// A cart copy as the stack serves it: Handoff's gRPC server verifying tokens.
	c := cart.New(cart.Config{Pool: e.cartDB, NATS: testenv.NATSConn(t, e.nats), Currency: "USD", Logger: testenv.Logger(t),
		CheckoutTimeout: 10 * time.Second})
	t.Cleanup(c.Close)
	srv := grpcserver.New(testenv.Logger(t), keys)
	c.RegisterGRPC(srv)
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
	carts := cartv1.NewCartServiceClient(conn)

	// An identity provider's subject: a long e-mail address (129 characters), which the token
	// carries as it is.
	subject := strings.Repeat("a", 117) + "@example.com"
	jt := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": subject, "role": "customer", "iss": auth.Issuer,
		"exp": time.Now().Add(time.Hour).Unix()})
	jt.Header["kid"] = "idp"
	tok, err := jt.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+tok)

	res, err := carts.CreateCart(ctx, &cartv1.CreateCartRequest{
		Lines:  []*cartv1.NewCartLine{{Sku: sku, Quantity: 1}},
		Pickup: &cartv1.Pickup{Choice: &cartv1.Pickup_StoreId{StoreId: storeID}},
	})
	if err != nil {
		// Refused up front is an answer too: the shopper never builds a cart it cannot order.
		if status.Code(err) == codes.Unauthenticated || status.Code(err) == codes.PermissionDenied {
			return
		}
		t.Fatalf("CreateCart: %v", err)
	}
	out, err := carts.Checkout(ctx, &cartv1.CheckoutRequest{CartId: res.GetCart().GetId(), IdempotencyKey: "long-subject-1"})
	if err != nil || out.GetOrder().GetState() != fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED {
		t.Fatalf("the cart took customer %d characters long and its lines, but Checkout = %v, %v; want CONFIRMED (or the token refused before any cart was made)",
			len(subject), out.GetOrder().GetState(), err)
	}
}
