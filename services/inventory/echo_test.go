package inventory_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/grpcserver"
	"github.com/handoff-dev/handoff/internal/testenv"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// A malformed SKU is refused as InvalidArgument naming the field, whatever its length: the
// refusal must not repeat the caller's text back at four times its size (%q of control
// characters), which overflows the headers the status travels in.
func TestAHugeMalformedSKUIsRefusedNamingItInFewBytes(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	srv := grpcserver.New(testenv.Logger(t), nil)
	e.copies[0].RegisterGRPC(srv.Server)
	locator := inventoryv1.NewStoreLocatorServiceClient(testenv.GRPC(t, srv.Server))

	sku := strings.Repeat("\x01", 3<<20) // 3 MiB: under the 4 MiB a request may have
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := locator.GetAvailability(ctx, &inventoryv1.GetAvailabilityRequest{StoreId: "s1", Skus: []string{sku}})
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "skus[0]") {
		t.Fatalf("GetAvailability with a 3 MiB malformed SKU: got %v %.200q, want InvalidArgument naming skus[0]", st.Code(), st.Message())
	}
	if len(st.Message()) > 64<<10 {
		t.Errorf("refusal's message is %d bytes for a %d byte SKU", len(st.Message()), len(sku))
	}
}

// Through the gateway a request is at most 1 MiB: the refusal of a 1 MiB malformed SKU is
// InvalidArgument, and a few kilobytes, details included (it was 8 MiB).
func TestTheRefusalOfAMegabyteSKUIsSmall(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	sku := strings.Repeat("\x01", 1<<20)
	_, err := e.locator.GetAvailability(e.ctx(), &inventoryv1.GetAvailabilityRequest{StoreId: "s1", Skus: []string{sku}})
	st := status.Convert(err)
	size := len(st.Message())
	for _, d := range st.Proto().GetDetails() {
		size += len(d.GetValue())
	}
	if st.Code() != codes.InvalidArgument || size > 64<<10 {
		t.Errorf("refusal %v of %d bytes for a %d byte request; want InvalidArgument of a few KB", st.Code(), size, len(sku))
	}
}
