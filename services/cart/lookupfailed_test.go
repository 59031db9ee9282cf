package cart

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/testenv"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// A question too big to send to another service (over NATS's payload limit) is never
// answered however often it is asked again: it is the caller's input, named, not an outage to
// retry.
func TestAQuestionTooBigToSendIsTheCallersInputNotAnOutage(t *testing.T) {
	nc := testenv.NATSConn(t, testenv.NATS(t))
	huge := &inventoryv1.GetStoreRequest{StoreId: strings.Repeat("s", 2<<20)}
	err := natsrpc.Call(t.Context(), nc, subjectGetStore, huge, &inventoryv1.GetStoreResponse{})
	if err == nil {
		t.Fatal("a 2 MB request was sent")
	}
	got := status.Convert(lookupFailed("inventory", "pickup.store_id", err))
	if got.Code() != codes.InvalidArgument || !strings.Contains(got.Message(), "pickup.store_id") {
		t.Errorf("named field: %v %q; want InvalidArgument naming pickup.store_id", got.Code(), got.Message())
	}
	if got := status.Code(lookupFailed("inventory", "", err)); got != codes.Internal {
		t.Errorf("the cart's own question: %v; want Internal", got)
	}
}
