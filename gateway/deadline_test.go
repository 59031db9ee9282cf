package gateway_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"

	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	"github.com/handoff-dev/handoff/proto/handoff/catalog/v1/catalogv1connect"
)

// deadlineCatalog reports how long each ListCategories was given to answer.
type deadlineCatalog struct {
	catalogv1.UnimplementedCatalogServiceServer
	left chan time.Duration
}

func (c deadlineCatalog) ListCategories(ctx context.Context, _ *catalogv1.ListCategoriesRequest) (*catalogv1.ListCategoriesResponse, error) {
	left := time.Duration(-1)
	if d, ok := ctx.Deadline(); ok {
		left = time.Until(d)
	}
	c.left <- left
	return &catalogv1.ListCategoriesResponse{}, nil
}

// A client may give a call less time than the gateway's cap, not more: asking for thirty days
// must not hold a backend call, and its connection, that long.
func TestAClientsDeadlineIsCappedAtTheGateway(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	cat := deadlineCatalog{left: make(chan time.Duration, 1)}
	catalogv1.RegisterCatalogServiceServer(srv, cat)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	g := gatewayTo(t, lis.Addr().String(), time.Second)

	c := catalogv1connect.NewCatalogServiceClient(http.DefaultClient, "http://"+g.addr)
	for _, asked := range []time.Duration{30 * 24 * time.Hour, 5 * time.Second} {
		callCtx, callCancel := context.WithTimeout(t.Context(), asked)
		_, err := c.ListCategories(callCtx, connect.NewRequest(&catalogv1.ListCategoriesRequest{}))
		callCancel()
		if err != nil {
			t.Fatal(err)
		}
		left := <-cat.left
		if want := min(asked, 30*time.Second); left <= 0 || left > want {
			t.Errorf("asked for %s, the backend was given %s; want at most %s", asked, left.Round(time.Millisecond), want)
		}
	}
}
