package checkout_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
)

// A pickup store id no store can have is the caller's bad input, refused naming
// pickup.store_id: one too big to ask inventory about (over NATS's payload limit) was answered
// Unavailable ("try again"), which a client retries for ever.
func TestAPickupStoreIDNoStoreCanHaveIsRefusedNamingIt(t *testing.T) {
	e := newEnv(t)
	c := e.filledCart("alice", 1, e.skus(1)...)
	for _, id := range []string{strings.Repeat("s", 2<<20), strings.Repeat("s", 65), "Sea-Capitol-Hill", "-s1"} {
		_, err := e.carts.SetPickup(e.as("alice"), &cartv1.SetPickupRequest{CartId: c.GetId(),
			Pickup: &cartv1.Pickup{Choice: &cartv1.Pickup_StoreId{StoreId: id}}})
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "pickup.store_id") {
			t.Errorf("SetPickup with store id %.20q (%d bytes): %v %q; want InvalidArgument naming pickup.store_id", id, len(id), st.Code(), st.Message())
		}
		_, err = e.carts.CreateCart(e.as("alice"), &cartv1.CreateCartRequest{
			Pickup: &cartv1.Pickup{Choice: &cartv1.Pickup_StoreId{StoreId: id}}})
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "pickup.store_id") {
			t.Errorf("CreateCart with store id %.20q (%d bytes): %v %q; want InvalidArgument naming pickup.store_id", id, len(id), st.Code(), st.Message())
		}
	}
}
