package fulfilment

import (
	"context"

	"google.golang.org/grpc"

	"github.com/handoff-dev/handoff/internal/natsrpc"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/services/fulfilment/notify"
)

// SubjectPlaceOrder is the NATS request/reply subject the cart places orders on
// (PlaceOrderRequest → PlaceOrderResponse).
var SubjectPlaceOrder = natsrpc.Subject("fulfilment", "place_order")

// SubjectFindCheckoutOrder is the NATS request/reply subject the cart asks for a checkout's
// order on, without placing one (FindCheckoutOrderRequest → FindCheckoutOrderResponse).
var SubjectFindCheckoutOrder = natsrpc.Subject("fulfilment", "find_checkout_order")

// RegisterGRPC serves the shopper's OrderService, the staff's StoreOrderService (both read
// the caller from the metadata the edges set, see caller.go) and the operators'
// FulfilmentAdminService (adminAPI; the edge lets only admin tokens reach it) on srv.
func (s *Service) RegisterGRPC(srv grpc.ServiceRegistrar) {
	fulfilmentv1.RegisterOrderServiceServer(srv, orderAPI{s: s})
	fulfilmentv1.RegisterStoreOrderServiceServer(srv, storeAPI{s: s})
	fulfilmentv1.RegisterFulfilmentAdminServiceServer(srv, adminAPI{Admin: notify.NewAdmin(s.db, s.log), s: s})
}

// adminAPI is FulfilmentAdminService: the notifications' dead letters (package notify) and the
// erasure of a shopper's personal data (forget.go).
type adminAPI struct {
	*notify.Admin
	s *Service
}

func (a adminAPI) ForgetCustomer(ctx context.Context, req *fulfilmentv1.ForgetCustomerRequest) (*fulfilmentv1.ForgetCustomerResponse, error) {
	return a.s.ForgetCustomer(ctx, req.GetCustomerId())
}

// RegisterNATS serves place_order and find_checkout_order on svc.
func (s *Service) RegisterNATS(svc *natsrpc.Service) error {
	if err := natsrpc.Handle(svc, SubjectPlaceOrder, func(ctx context.Context, req *fulfilmentv1.PlaceOrderRequest) (*fulfilmentv1.PlaceOrderResponse, error) {
		o, err := s.PlaceOrder(ctx, req)
		if err != nil {
			return nil, err
		}
		return &fulfilmentv1.PlaceOrderResponse{Order: o}, nil
	}); err != nil {
		return err
	}
	return natsrpc.Handle(svc, SubjectFindCheckoutOrder, func(ctx context.Context, req *fulfilmentv1.FindCheckoutOrderRequest) (*fulfilmentv1.FindCheckoutOrderResponse, error) {
		o, err := s.FindCheckoutOrder(ctx, req.GetCustomerId(), req.GetIdempotencyKey(), req.GetCartId())
		if err != nil {
			return nil, err
		}
		return &fulfilmentv1.FindCheckoutOrderResponse{Order: o}, nil
	})
}

// orderAPI is OrderService: a shopper's own orders, nobody else's.
type orderAPI struct {
	fulfilmentv1.UnimplementedOrderServiceServer
	s *Service
}

func (a orderAPI) GetOrder(ctx context.Context, req *fulfilmentv1.GetOrderRequest) (*fulfilmentv1.GetOrderResponse, error) {
	customerID, _, err := requireCustomer(ctx)
	if err != nil {
		return nil, err
	}
	o, err := a.s.GetOrder(ctx, scope{customerID: customerID}, req.GetOrderId())
	if err != nil {
		return nil, err
	}
	return &fulfilmentv1.GetOrderResponse{Order: o.proto(viewOwner, a.s.secret)}, nil
}

func (a orderAPI) ListOrders(ctx context.Context, req *fulfilmentv1.ListOrdersRequest) (*fulfilmentv1.ListOrdersResponse, error) {
	customerID, _, err := requireCustomer(ctx)
	if err != nil {
		return nil, err
	}
	orders, next, err := a.s.ListOrders(ctx, customerID, req)
	if err != nil {
		return nil, err
	}
	res := &fulfilmentv1.ListOrdersResponse{NextPageToken: next}
	for _, o := range orders {
		res.Orders = append(res.Orders, o.proto(viewOwner, a.s.secret))
	}
	return res, nil
}

func (a orderAPI) WatchOrder(req *fulfilmentv1.WatchOrderRequest, stream grpc.ServerStreamingServer[fulfilmentv1.WatchOrderResponse]) error {
	customerID, _, err := requireCustomer(stream.Context())
	if err != nil {
		return err
	}
	return a.s.WatchOrder(stream.Context(), customerID, req.GetOrderId(), stream.Send)
}

func (a orderAPI) CancelOrder(ctx context.Context, req *fulfilmentv1.CancelOrderRequest) (*fulfilmentv1.CancelOrderResponse, error) {
	customerID, actor, err := requireCustomer(ctx)
	if err != nil {
		return nil, err
	}
	o, err := a.s.CancelByCustomer(ctx, customerID, actor, req.GetOrderId(), req.GetReason())
	if err != nil {
		return nil, err
	}
	return &fulfilmentv1.CancelOrderResponse{Order: o.proto(viewOwner, a.s.secret)}, nil
}

func (a orderAPI) CheckIn(ctx context.Context, req *fulfilmentv1.CheckInRequest) (*fulfilmentv1.CheckInResponse, error) {
	customerID, actor, err := requireCustomer(ctx)
	if err != nil {
		return nil, err
	}
	o, err := a.s.CheckIn(ctx, customerID, actor, req.GetOrderId(), req.GetBay())
	if err != nil {
		return nil, err
	}
	return &fulfilmentv1.CheckInResponse{Order: o.proto(viewOwner, a.s.secret)}, nil
}

// storeAPI is StoreOrderService: staff acting for one of their stores; pickup codes never
// leave through it.
type storeAPI struct {
	fulfilmentv1.UnimplementedStoreOrderServiceServer
	s *Service
}

func (a storeAPI) ListStoreOrders(ctx context.Context, req *fulfilmentv1.ListStoreOrdersRequest) (*fulfilmentv1.ListStoreOrdersResponse, error) {
	if _, err := requireStaff(ctx, req.GetStoreId()); err != nil {
		return nil, err
	}
	orders, next, err := a.s.ListStoreOrders(ctx, req.GetStoreId(), req)
	if err != nil {
		return nil, err
	}
	res := &fulfilmentv1.ListStoreOrdersResponse{NextPageToken: next}
	for _, o := range orders {
		res.Orders = append(res.Orders, o.proto(viewOthers, nil))
	}
	return res, nil
}

func (a storeAPI) AcceptOrder(ctx context.Context, req *fulfilmentv1.AcceptOrderRequest) (*fulfilmentv1.AcceptOrderResponse, error) {
	actor, err := requireStaff(ctx, req.GetStoreId())
	if err != nil {
		return nil, err
	}
	o, err := a.s.Accept(ctx, req.GetStoreId(), actor, req.GetOrderId())
	if err != nil {
		return nil, err
	}
	return &fulfilmentv1.AcceptOrderResponse{Order: o.proto(viewOthers, nil)}, nil
}

func (a storeAPI) MarkLineUnavailable(ctx context.Context, req *fulfilmentv1.MarkLineUnavailableRequest) (*fulfilmentv1.MarkLineUnavailableResponse, error) {
	actor, err := requireStaff(ctx, req.GetStoreId())
	if err != nil {
		return nil, err
	}
	o, err := a.s.MarkLineUnavailable(ctx, req.GetStoreId(), actor, req.GetOrderId(), req.GetLineId(), req.GetReason())
	if err != nil {
		return nil, err
	}
	return &fulfilmentv1.MarkLineUnavailableResponse{Order: o.proto(viewOthers, nil)}, nil
}

func (a storeAPI) MarkReady(ctx context.Context, req *fulfilmentv1.MarkReadyRequest) (*fulfilmentv1.MarkReadyResponse, error) {
	actor, err := requireStaff(ctx, req.GetStoreId())
	if err != nil {
		return nil, err
	}
	o, err := a.s.MarkReady(ctx, req.GetStoreId(), actor, req.GetOrderId())
	if err != nil {
		return nil, err
	}
	return &fulfilmentv1.MarkReadyResponse{Order: o.proto(viewOthers, nil)}, nil
}

func (a storeAPI) HandOver(ctx context.Context, req *fulfilmentv1.HandOverRequest) (*fulfilmentv1.HandOverResponse, error) {
	actor, err := requireStaff(ctx, req.GetStoreId())
	if err != nil {
		return nil, err
	}
	o, err := a.s.HandOver(ctx, req.GetStoreId(), actor, req.GetOrderId(), req.GetPickupCode())
	if err != nil {
		return nil, err
	}
	return &fulfilmentv1.HandOverResponse{Order: o.proto(viewOthers, nil)}, nil
}

func (a storeAPI) CancelOrder(ctx context.Context, req *fulfilmentv1.StoreOrderServiceCancelOrderRequest) (*fulfilmentv1.StoreOrderServiceCancelOrderResponse, error) {
	actor, err := requireStaff(ctx, req.GetStoreId())
	if err != nil {
		return nil, err
	}
	o, err := a.s.CancelByStaff(ctx, req.GetStoreId(), actor, req.GetOrderId(), req.GetReason())
	if err != nil {
		return nil, err
	}
	return &fulfilmentv1.StoreOrderServiceCancelOrderResponse{Order: o.proto(viewOthers, nil)}, nil
}
