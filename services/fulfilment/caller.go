package fulfilment

import (
	"context"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
)

// Who is calling. When fulfilment's gRPC server verifies tokens (grpcserver.New with keys, as
// the stack runs it) the verified principal in the context is the caller and these metadata
// keys are ignored, so no client can name someone else. Only a server built without keys (a
// test of this service alone) trusts them. This file is the only place fulfilment learns who
// calls.
const (
	// MetadataCustomerID is the shopper's customer id (shopper tokens).
	MetadataCustomerID = "x-handoff-customer-id"
	// MetadataStaffStores lists, comma-separated, the stores a staff caller may act for.
	MetadataStaffStores = "x-handoff-staff-stores"
	// MetadataActor is who acts, "kind:id" (kind: customer, staff, admin, system, vendor), for
	// order histories.
	MetadataActor = "x-handoff-actor"
)

// caller is who is calling, as the edge said.
type caller struct {
	customerID  string
	staffStores []string
	allStores   bool // an admin acts for every store
	actor       *commonv1.Actor
}

func callerFrom(ctx context.Context) caller {
	if p, ok := auth.FromContext(ctx); ok {
		switch p.Role {
		case auth.RoleCustomer:
			return caller{customerID: p.Subject, actor: &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_CUSTOMER, Id: p.Subject}}
		case auth.RoleStaff:
			return caller{staffStores: p.Stores, actor: &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_STAFF, Id: p.Subject}}
		case auth.RoleAdmin:
			return caller{allStores: true, actor: &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_ADMIN, Id: p.Subject}}
		}
		return caller{}
	}
	md, _ := metadata.FromIncomingContext(ctx)
	first := func(key string) string {
		if v := md.Get(key); len(v) > 0 {
			return strings.TrimSpace(v[0])
		}
		return ""
	}
	c := caller{customerID: first(MetadataCustomerID)}
	for _, v := range md.Get(MetadataStaffStores) {
		for _, id := range strings.Split(v, ",") {
			if id = strings.TrimSpace(id); id != "" {
				c.staffStores = append(c.staffStores, id)
			}
		}
	}
	if kind, id, ok := strings.Cut(first(MetadataActor), ":"); ok && id != "" {
		if k, known := actorKinds[strings.ToLower(kind)]; known {
			c.actor = &commonv1.Actor{Kind: k, Id: id}
		}
	}
	return c
}

var actorKinds = map[string]commonv1.ActorKind{
	"customer": commonv1.ActorKind_ACTOR_KIND_CUSTOMER,
	"staff":    commonv1.ActorKind_ACTOR_KIND_STAFF,
	"terminal": commonv1.ActorKind_ACTOR_KIND_STAFF,
	"admin":    commonv1.ActorKind_ACTOR_KIND_ADMIN,
	"system":   commonv1.ActorKind_ACTOR_KIND_SYSTEM,
	"vendor":   commonv1.ActorKind_ACTOR_KIND_VENDOR,
}

// requireCustomer returns the calling shopper's id and actor; OrderService needs one.
func requireCustomer(ctx context.Context) (string, *commonv1.Actor, error) {
	c := callerFrom(ctx)
	if c.customerID == "" {
		return "", nil, status.Error(codes.Unauthenticated, "a shopper's sign-in is required (no customer id from the edge)")
	}
	actor := c.actor
	if actor == nil || actor.GetKind() != commonv1.ActorKind_ACTOR_KIND_CUSTOMER {
		actor = &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_CUSTOMER, Id: c.customerID}
	}
	return c.customerID, actor, nil
}

// requireStaff checks that the caller may act for storeID and returns its actor;
// StoreOrderService needs one. An order of another store is then NotFound (see scope).
func requireStaff(ctx context.Context, storeID string) (*commonv1.Actor, error) {
	if storeID == "" {
		return nil, rpcerr.Invalid("store_id", "required")
	}
	c := callerFrom(ctx)
	if len(c.staffStores) == 0 && !c.allStores {
		return nil, status.Error(codes.Unauthenticated, "a staff sign-in is required (no staff stores from the edge)")
	}
	if !c.allStores && !slices.Contains(c.staffStores, storeID) {
		return nil, rpcerr.PermissionDenied("not allowed to act for store %q", rpcerr.Echo(storeID))
	}
	actor := c.actor
	if actor == nil {
		actor = &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_STAFF, Id: "store:" + storeID}
	}
	return actor, nil
}
