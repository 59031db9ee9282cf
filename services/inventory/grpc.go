package inventory

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/natsrpc"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// NATS request/reply subjects inventory serves (protobuf bodies, see package natsrpc).
var (
	// SubjectReserveHolds: ReserveHoldsRequest → ReserveHoldsResponse.
	SubjectReserveHolds = natsrpc.Subject("inventory", "reserve_holds")
	// SubjectReleaseHolds: ReleaseHoldsRequest → ReleaseHoldsResponse.
	SubjectReleaseHolds = natsrpc.Subject("inventory", "release_holds")
	// SubjectCommitHolds: CommitHoldsRequest → CommitHoldsResponse.
	SubjectCommitHolds = natsrpc.Subject("inventory", "commit_holds")
	// SubjectExtendHolds: ExtendHoldsRequest → ExtendHoldsResponse.
	SubjectExtendHolds = natsrpc.Subject("inventory", "extend_holds")
	// SubjectChangeHolds: ChangeHoldsRequest → ChangeHoldsResponse (many orders' releases,
	// commits and extensions in one transaction).
	SubjectChangeHolds = natsrpc.Subject("inventory", "change_holds")
	// SubjectGetAvailability: GetAvailabilityRequest → GetAvailabilityResponse.
	SubjectGetAvailability = natsrpc.Subject("inventory", "get_availability")
	// SubjectGetStore: GetStoreRequest → GetStoreResponse.
	SubjectGetStore = natsrpc.Subject("inventory", "get_store")
)

// RegisterGRPC serves the shopper-facing locator and the admin API on srv.
func (s *Service) RegisterGRPC(srv grpc.ServiceRegistrar) {
	inventoryv1.RegisterStoreLocatorServiceServer(srv, locatorAPI{s: s})
	inventoryv1.RegisterInventoryAdminServiceServer(srv, adminAPI{s: s})
}

// RegisterNATS serves the holds and the availability questions of fulfilment and cart.
func (s *Service) RegisterNATS(svc *natsrpc.Service) error {
	handlers := []func() error{
		func() error { return natsrpc.Handle(svc, SubjectReserveHolds, s.ReserveHolds) },
		func() error {
			return natsrpc.Handle(svc, SubjectReleaseHolds, func(ctx context.Context, req *inventoryv1.ReleaseHoldsRequest) (*inventoryv1.ReleaseHoldsResponse, error) {
				hs, err := s.ReleaseHolds(ctx, req.GetOrderId(), req.GetLineId(), req.GetReason())
				if err != nil {
					return nil, err
				}
				return &inventoryv1.ReleaseHoldsResponse{Released: hs}, nil
			})
		},
		func() error {
			return natsrpc.Handle(svc, SubjectCommitHolds, func(ctx context.Context, req *inventoryv1.CommitHoldsRequest) (*inventoryv1.CommitHoldsResponse, error) {
				return s.CommitHolds(ctx, req)
			})
		},
		func() error {
			return natsrpc.Handle(svc, SubjectExtendHolds, func(ctx context.Context, req *inventoryv1.ExtendHoldsRequest) (*inventoryv1.ExtendHoldsResponse, error) {
				hs, err := s.ExtendHolds(ctx, req.GetOrderId(), req.GetExpireTime())
				if err != nil {
					return nil, err
				}
				return &inventoryv1.ExtendHoldsResponse{Holds: hs}, nil
			})
		},
		func() error { return natsrpc.Handle(svc, SubjectChangeHolds, s.ChangeHolds) },
		func() error {
			return natsrpc.Handle(svc, SubjectGetAvailability, func(ctx context.Context, req *inventoryv1.GetAvailabilityRequest) (*inventoryv1.GetAvailabilityResponse, error) {
				return s.GetAvailability(ctx, req.GetStoreId(), req.GetSkus())
			})
		},
		func() error {
			return natsrpc.Handle(svc, SubjectGetStore, func(ctx context.Context, req *inventoryv1.GetStoreRequest) (*inventoryv1.GetStoreResponse, error) {
				st, err := s.GetStore(ctx, req.GetStoreId())
				if err != nil {
					return nil, err
				}
				return &inventoryv1.GetStoreResponse{Store: st}, nil
			})
		},
	}
	for _, h := range handlers {
		if err := h(); err != nil {
			return err
		}
	}
	return nil
}

// ActorMetadataKey is the gRPC metadata key that names who makes an admin change, as
// "kind:id" (kind one of customer, staff, admin, system, vendor), for the ledger.
const ActorMetadataKey = "x-handoff-actor"

// actorFromContext says who is calling, for ledger rows: the verified caller of the token. The
// pos-adapter's calls on behalf of a terminal or a vendor carry that actor in their token's
// subject (auth.OnBehalfOf); an admin's own changes are the admin's, whatever its metadata
// says. A server without keys (a test of this service alone) trusts x-handoff-actor. This is
// the one place inventory learns who calls.
func actorFromContext(ctx context.Context) *commonv1.Actor {
	unknown := &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_ADMIN, Id: "unknown"}
	var named string
	if p, ok := auth.FromContext(ctx); ok {
		switch p.Role {
		case auth.RoleCustomer:
			return &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_CUSTOMER, Id: p.Subject}
		case auth.RoleStaff:
			return &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_STAFF, Id: p.Subject}
		}
		admin := &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_ADMIN, Id: p.Subject}
		if named, ok = p.OnBehalfOf(); !ok {
			return admin
		}
		unknown = admin
	} else if md, ok := metadata.FromIncomingContext(ctx); ok {
		if vals := md.Get(ActorMetadataKey); len(vals) > 0 {
			named = vals[0]
		}
	}
	kind, id, ok := strings.Cut(named, ":")
	if !ok || id == "" || len(id) > maxIDLen {
		return unknown
	}
	for k, name := range actorKinds {
		if name == kind {
			return &commonv1.Actor{Kind: k, Id: id}
		}
	}
	return unknown
}

// locatorAPI is StoreLocatorService: reads only, safe for anonymous callers.
type locatorAPI struct {
	inventoryv1.UnimplementedStoreLocatorServiceServer
	s *Service
}

func (a locatorAPI) FindStores(ctx context.Context, req *inventoryv1.FindStoresRequest) (*inventoryv1.FindStoresResponse, error) {
	return a.s.FindStores(ctx, req)
}

func (a locatorAPI) GetStore(ctx context.Context, req *inventoryv1.GetStoreRequest) (*inventoryv1.GetStoreResponse, error) {
	st, err := a.s.GetStore(ctx, req.GetStoreId())
	if err != nil {
		return nil, err
	}
	return &inventoryv1.GetStoreResponse{Store: st}, nil
}

func (a locatorAPI) GetAvailability(ctx context.Context, req *inventoryv1.GetAvailabilityRequest) (*inventoryv1.GetAvailabilityResponse, error) {
	return a.s.GetAvailability(ctx, req.GetStoreId(), req.GetSkus())
}

// adminAPI is InventoryAdminService.
type adminAPI struct {
	inventoryv1.UnimplementedInventoryAdminServiceServer
	s *Service
}

func (a adminAPI) CreateStore(ctx context.Context, req *inventoryv1.CreateStoreRequest) (*inventoryv1.CreateStoreResponse, error) {
	st, err := a.s.CreateStore(ctx, req.GetStore())
	if err != nil {
		return nil, err
	}
	return &inventoryv1.CreateStoreResponse{Store: st}, nil
}

func (a adminAPI) UpdateStore(ctx context.Context, req *inventoryv1.UpdateStoreRequest) (*inventoryv1.UpdateStoreResponse, error) {
	st, err := a.s.UpdateStore(ctx, req.GetStore(), req.GetUpdateMask().GetPaths(), req.GetExpectedVersion())
	if err != nil {
		return nil, err
	}
	return &inventoryv1.UpdateStoreResponse{Store: st}, nil
}

func (a adminAPI) SetStoreState(ctx context.Context, req *inventoryv1.SetStoreStateRequest) (*inventoryv1.SetStoreStateResponse, error) {
	return a.s.SetStoreState(ctx, req.GetStoreId(), StateChange{
		State: req.GetState(), Reason: req.GetReason(), ExpectedVersion: req.GetExpectedVersion(),
		CancelOpenOrders: req.GetCancelOpenOrders(), Actor: actorFromContext(ctx),
	})
}

func (a adminAPI) ListStores(ctx context.Context, req *inventoryv1.ListStoresRequest) (*inventoryv1.ListStoresResponse, error) {
	return a.s.ListStores(ctx, req)
}

func (a adminAPI) SetStock(ctx context.Context, req *inventoryv1.SetStockRequest) (*inventoryv1.SetStockResponse, error) {
	l, m, err := a.s.SetStock(ctx, actorFromContext(ctx), req)
	if err != nil {
		return nil, err
	}
	return &inventoryv1.SetStockResponse{Level: l, Movement: m}, nil
}

func (a adminAPI) AdjustStock(ctx context.Context, req *inventoryv1.AdjustStockRequest) (*inventoryv1.AdjustStockResponse, error) {
	l, m, err := a.s.AdjustStock(ctx, actorFromContext(ctx), req)
	if err != nil {
		return nil, err
	}
	return &inventoryv1.AdjustStockResponse{Level: l, Movement: m}, nil
}

func (a adminAPI) ListStock(ctx context.Context, req *inventoryv1.ListStockRequest) (*inventoryv1.ListStockResponse, error) {
	return a.s.ListStock(ctx, req)
}

func (a adminAPI) ListMovements(ctx context.Context, req *inventoryv1.ListMovementsRequest) (*inventoryv1.ListMovementsResponse, error) {
	return a.s.ListMovements(ctx, req)
}

func (a adminAPI) CheckInvariants(ctx context.Context, req *inventoryv1.CheckInvariantsRequest) (*inventoryv1.CheckInvariantsResponse, error) {
	return a.s.CheckInvariants(ctx, req.GetStoreId())
}
