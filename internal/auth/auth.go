// Package auth is who may call what. Callers carry a signed JWT (the Authorization: Bearer
// header); every gRPC server and edge verifies it with the same key set and puts the caller's
// Principal in the context. Services decide with the Principal, never with headers a client
// could forge: the edges forward the token, not a claimed identity.
//
// Roles: a customer (shopper) acts on their own carts and orders; staff act for the stores
// named in the token; admin reaches the admin APIs. Anonymous callers may only browse the
// catalog and the store locator.
package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/rpcerr"
)

// Role is what a caller is.
type Role string

// Roles.
const (
	RoleCustomer Role = "customer"
	RoleStaff    Role = "staff"
	RoleAdmin    Role = "admin"
)

// Issuer is the iss claim Handoff issues and accepts.
const Issuer = "handoff"

// Principal is a verified caller.
type Principal struct {
	// Subject is the customer id, staff/terminal id or admin name.
	Subject string
	// Role is what the caller is.
	Role Role
	// Stores are the store ids a staff caller acts for.
	Stores []string
	// TokenID is the jti claim, for rate limits and revocation.
	TokenID string
	// Expires is when the token stops being valid.
	Expires time.Time
}

// ActsForStore reports whether p may act for store id (staff of that store, or an admin).
func (p Principal) ActsForStore(id string) bool {
	return p.Role == RoleAdmin || (p.Role == RoleStaff && slices.Contains(p.Stores, id))
}

// Actor is "kind:id" for histories and ledgers.
func (p Principal) Actor() string { return string(p.Role) + ":" + p.Subject }

// delegatePrefix starts the subject of an admin token the pos-adapter mints for one call made
// on behalf of someone it has checked (a terminal's stock change, a vendor's signed count).
const delegatePrefix = "pos-adapter/"

// DelegateSubject is the subject of an admin token minted to act for actor ("kind:id").
func DelegateSubject(actor string) string { return delegatePrefix + actor }

// OnBehalfOf gives the actor ("kind:id") an admin token minted by DelegateSubject acts for.
// The subject carries it, signed, so an admin's own token cannot name someone else.
func (p Principal) OnBehalfOf() (actor string, ok bool) {
	if p.Role != RoleAdmin {
		return "", false
	}
	return strings.CutPrefix(p.Subject, delegatePrefix)
}

// claims is the token body.
type claims struct {
	Role   Role     `json:"role"`
	Stores []string `json:"stores,omitempty"`
	jwt.RegisteredClaims
}

// Errors Verify returns; the edges map them to Unauthenticated.
var (
	ErrNoToken      = errors.New("no bearer token")
	ErrInvalidToken = errors.New("invalid token")
	ErrExpired      = errors.New("token expired")
)

type ctxKey struct{}

// NewContext returns ctx carrying p.
func NewContext(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the caller, if one was verified.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(ctxKey{}).(Principal)
	return p, ok
}

// BearerToken extracts the token from an Authorization header value.
func BearerToken(header string) (string, error) {
	if header == "" {
		return "", ErrNoToken
	}
	scheme, token, ok := strings.Cut(header, " ")
	token = strings.Trim(token, " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || token == "" || !isToken68(token) {
		return "", fmt.Errorf("%w: Authorization header is not \"Bearer <token>\"", ErrInvalidToken)
	}
	return token, nil
}

// isToken68 reports whether token is made of the characters a bearer token may have (RFC 6750's
// b64token). Anything else (a tab, a control or non-ASCII character) is refused here: verified
// all the same, it would be forwarded in the header to the services, where gRPC refuses it, and
// the caller would get Internal for their own bad header.
func isToken68(token string) bool {
	body := strings.TrimRight(token, "=")
	if body == "" {
		return false
	}
	for i := 0; i < len(body); i++ {
		switch c := body[i]; {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9',
			c == '-', c == '.', c == '_', c == '~', c == '+', c == '/':
		default:
			return false
		}
	}
	return true
}

// Customer returns the calling customer, or Unauthenticated when the call carries none (the
// interceptor already refused other roles on customer services).
func Customer(ctx context.Context) (Principal, error) {
	p, ok := FromContext(ctx)
	if !ok || p.Role != RoleCustomer {
		return Principal{}, status.Error(codes.Unauthenticated, "this call needs a customer token")
	}
	return p, nil
}

// ForStore checks that the caller may act for storeID: PermissionDenied names the store.
func ForStore(ctx context.Context, storeID string) (Principal, error) {
	p, ok := FromContext(ctx)
	if !ok {
		return Principal{}, status.Error(codes.Unauthenticated, "this call needs a staff token")
	}
	if !p.ActsForStore(storeID) {
		return Principal{}, status.Errorf(codes.PermissionDenied, "store_id: %s may not act for store %q", p.Actor(), rpcerr.Echo(storeID))
	}
	return p, nil
}
