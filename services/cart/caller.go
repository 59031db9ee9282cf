package cart

import (
	"context"
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/auth"
)

// CustomerIDMetadata is the gRPC metadata key in which an edge may name the shopper when the
// cart's gRPC server does not verify tokens itself (a server built without keys, as in tests).
const CustomerIDMetadata = "x-handoff-customer-id"

// callerID returns the customer the request acts for, or Unauthenticated. This is the one place
// the cart learns who is calling:
//
//   - When the gRPC server verifies tokens (grpcserver.New with keys, as the stack runs it), the
//     verified principal in the context is the caller, and only a customer may use a cart;
//     metadata is then ignored, so a client cannot name someone else.
//   - Otherwise the edge's x-handoff-customer-id metadata is trusted.
func callerID(ctx context.Context) (string, error) {
	if p, ok := auth.FromContext(ctx); ok {
		if p.Role != auth.RoleCustomer || p.Subject == "" {
			return "", status.Errorf(codes.PermissionDenied, "carts belong to customers; this is %s", auth.AToken(string(p.Role)))
		}
		return p.Subject, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(CustomerIDMetadata)
	if len(vals) != 1 || strings.TrimSpace(vals[0]) == "" {
		return "", status.Error(codes.Unauthenticated, "no customer identity: sign in to use a cart")
	}
	if utf8.RuneCountInString(vals[0]) > auth.MaxCustomerIDLen {
		return "", status.Error(codes.Unauthenticated, "customer identity is malformed")
	}
	return vals[0], nil
}
