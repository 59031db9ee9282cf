package cart

import (
	"context"

	"google.golang.org/grpc"

	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
)

// RegisterGRPC serves CartService on srv.
func (s *Service) RegisterGRPC(srv grpc.ServiceRegistrar) {
	cartv1.RegisterCartServiceServer(srv, api{s: s})
}

// api is CartService: it names the caller and calls the service. A failure that is not a
// deliberate status is logged and answered with a bare Internal by the server's interceptors
// (internal/grpcserver).
type api struct {
	cartv1.UnimplementedCartServiceServer
	s *Service
}

func (a api) CreateCart(ctx context.Context, req *cartv1.CreateCartRequest) (*cartv1.CreateCartResponse, error) {
	customer, err := callerID(ctx)
	if err != nil {
		return nil, err
	}
	c, err := a.s.CreateCart(ctx, customer, req)
	if err != nil {
		return nil, err
	}
	return &cartv1.CreateCartResponse{Cart: c}, nil
}

func (a api) GetCart(ctx context.Context, req *cartv1.GetCartRequest) (*cartv1.GetCartResponse, error) {
	customer, err := callerID(ctx)
	if err != nil {
		return nil, err
	}
	c, err := a.s.GetCart(ctx, customer, req.GetCartId())
	if err != nil {
		return nil, err
	}
	return &cartv1.GetCartResponse{Cart: c}, nil
}

func (a api) AddLine(ctx context.Context, req *cartv1.AddLineRequest) (*cartv1.AddLineResponse, error) {
	customer, err := callerID(ctx)
	if err != nil {
		return nil, err
	}
	c, err := a.s.AddLine(ctx, customer, req)
	if err != nil {
		return nil, err
	}
	return &cartv1.AddLineResponse{Cart: c}, nil
}

func (a api) UpdateLine(ctx context.Context, req *cartv1.UpdateLineRequest) (*cartv1.UpdateLineResponse, error) {
	customer, err := callerID(ctx)
	if err != nil {
		return nil, err
	}
	c, err := a.s.UpdateLine(ctx, customer, req)
	if err != nil {
		return nil, err
	}
	return &cartv1.UpdateLineResponse{Cart: c}, nil
}

func (a api) RemoveLine(ctx context.Context, req *cartv1.RemoveLineRequest) (*cartv1.RemoveLineResponse, error) {
	customer, err := callerID(ctx)
	if err != nil {
		return nil, err
	}
	c, err := a.s.RemoveLine(ctx, customer, req)
	if err != nil {
		return nil, err
	}
	return &cartv1.RemoveLineResponse{Cart: c}, nil
}

func (a api) ClearCart(ctx context.Context, req *cartv1.ClearCartRequest) (*cartv1.ClearCartResponse, error) {
	customer, err := callerID(ctx)
	if err != nil {
		return nil, err
	}
	c, err := a.s.ClearCart(ctx, customer, req)
	if err != nil {
		return nil, err
	}
	return &cartv1.ClearCartResponse{Cart: c}, nil
}

func (a api) SetPickup(ctx context.Context, req *cartv1.SetPickupRequest) (*cartv1.SetPickupResponse, error) {
	customer, err := callerID(ctx)
	if err != nil {
		return nil, err
	}
	c, err := a.s.SetPickup(ctx, customer, req)
	if err != nil {
		return nil, err
	}
	return &cartv1.SetPickupResponse{Cart: c}, nil
}

func (a api) Checkout(ctx context.Context, req *cartv1.CheckoutRequest) (*cartv1.CheckoutResponse, error) {
	customer, err := callerID(ctx)
	if err != nil {
		return nil, err
	}
	o, c, err := a.s.Checkout(ctx, customer, req)
	if err != nil {
		return nil, err
	}
	return &cartv1.CheckoutResponse{Order: o, Cart: c}, nil
}
