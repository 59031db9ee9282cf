package auth

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Access is who may call a service.
type Access int

// Access levels, from open to closed.
const (
	// AccessAnonymous: anyone is welcome (catalog, locator, health, reflection).
	AccessAnonymous Access = iota + 1
	// AccessCustomer: a customer token.
	AccessCustomer
	// AccessStaff: a staff token (or admin); the service then checks the store.
	AccessStaff
	// AccessAdmin: an admin token.
	AccessAdmin
)

// Policy says, per gRPC service (full name), who may call it. A service not listed is closed:
// adding an API without deciding who may call it cannot open it by accident.
type Policy map[string]Access

// DefaultPolicy is Handoff's: the shopper-facing services, the staff services and the admin
// services, plus health and reflection for everyone.
func DefaultPolicy() Policy {
	return Policy{
		"grpc.health.v1.Health":                        AccessAnonymous,
		"grpc.reflection.v1.ServerReflection":          AccessAnonymous,
		"grpc.reflection.v1alpha.ServerReflection":     AccessAnonymous,
		"handoff.catalog.v1.CatalogService":            AccessAnonymous,
		"handoff.inventory.v1.StoreLocatorService":     AccessAnonymous,
		"handoff.cart.v1.CartService":                  AccessCustomer,
		"handoff.fulfilment.v1.OrderService":           AccessCustomer,
		"handoff.fulfilment.v1.StoreOrderService":      AccessStaff,
		"handoff.pos.v1.TerminalService":               AccessStaff,
		"handoff.catalog.v1.CatalogAdminService":       AccessAdmin,
		"handoff.inventory.v1.InventoryAdminService":   AccessAdmin,
		"handoff.fulfilment.v1.FulfilmentAdminService": AccessAdmin,
		"handoff.pos.v1.TerminalAdminService":          AccessAdmin,
	}
}

// ServiceOf returns the service part of a full method name ("/pkg.Svc/Method" → "pkg.Svc").
func ServiceOf(fullMethod string) string {
	s := strings.TrimPrefix(fullMethod, "/")
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		return s[:i]
	}
	return s
}

// Authorize verifies the bearer token in authorization (may be empty) against the policy for
// fullMethod and returns the caller (zero Principal and false for an anonymous call). Errors
// are gRPC statuses: Unauthenticated for a missing, bad or expired token, PermissionDenied for
// the wrong role; DeadlineExceeded or Canceled when ctx ends while an identity provider's new
// key is still being fetched.
func (p Policy) Authorize(ctx context.Context, ks *KeySet, fullMethod, authorization string) (Principal, bool, error) {
	access, ok := p[ServiceOf(fullMethod)]
	if !ok {
		return Principal{}, false, status.Errorf(codes.PermissionDenied, "%s is not open to any caller", ServiceOf(fullMethod))
	}
	token, err := BearerToken(authorization)
	if errors.Is(err, ErrNoToken) {
		if access == AccessAnonymous {
			return Principal{}, false, nil
		}
		return Principal{}, false, status.Errorf(codes.Unauthenticated, "%s needs %s (Authorization: Bearer <token>)", ServiceOf(fullMethod), AToken(access.String()))
	}
	if err != nil {
		return Principal{}, false, status.Error(codes.Unauthenticated, err.Error())
	}
	principal, err := ks.Verify(ctx, token)
	switch {
	case isContextErr(err):
		// Not refused: the caller stopped waiting for an identity provider's new key.
		return Principal{}, false, status.FromContextError(err).Err()
	case errors.Is(err, ErrExpired):
		return Principal{}, false, status.Error(codes.Unauthenticated, "token expired: get a new one")
	case err != nil:
		var rejected *RejectedError
		if errors.As(err, &rejected) {
			return Principal{}, false, status.Error(codes.Unauthenticated, "token rejected: "+rejected.Reason)
		}
		return Principal{}, false, status.Error(codes.Unauthenticated, "token rejected: not signed by a key Handoff trusts, or malformed")
	}
	if !access.allows(principal.Role) {
		return Principal{}, false, status.Errorf(codes.PermissionDenied, "%s needs %s; this is %s", ServiceOf(fullMethod), AToken(access.String()), AToken(string(principal.Role)))
	}
	return principal, true, nil
}

func (a Access) allows(r Role) bool {
	switch a {
	case AccessAnonymous:
		return true
	case AccessCustomer:
		return r == RoleCustomer
	case AccessStaff:
		return r == RoleStaff || r == RoleAdmin
	case AccessAdmin:
		return r == RoleAdmin
	}
	return false
}

// AToken names a kind of token with its article, for messages: "an admin token".
func AToken(kind string) string {
	if kind != "" && strings.ContainsRune("aeiou", rune(kind[0])) {
		return "an " + kind + " token"
	}
	return "a " + kind + " token"
}

func (a Access) String() string {
	switch a {
	case AccessAnonymous:
		return "anonymous"
	case AccessCustomer:
		return "customer"
	case AccessStaff:
		return "staff"
	case AccessAdmin:
		return "admin"
	}
	return "unknown"
}

// UnaryServerInterceptor authorizes every unary call and puts the caller in its context.
func UnaryServerInterceptor(ks *KeySet, p Policy) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := p.authorizeIncoming(ctx, ks, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor authorizes every streaming call.
func StreamServerInterceptor(ks *KeySet, p Policy) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := p.authorizeIncoming(ss.Context(), ks, info.FullMethod)
		if err != nil {
			return err
		}
		return handler(srv, &principalStream{ServerStream: ss, ctx: ctx})
	}
}

func (p Policy) authorizeIncoming(ctx context.Context, ks *KeySet, fullMethod string) (context.Context, error) {
	var authorization string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			authorization = v[0]
		}
	}
	principal, ok, err := p.Authorize(ctx, ks, fullMethod, authorization)
	if err != nil {
		return ctx, err
	}
	if ok {
		ctx = NewContext(ctx, principal)
	}
	return ctx, nil
}

type principalStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *principalStream) Context() context.Context { return s.ctx }

// OutgoingContext forwards the caller's Authorization header on a gRPC call to a service, which
// verifies it again.
func OutgoingContext(ctx context.Context, authorization string) context.Context {
	if authorization == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", authorization)
}
