package fulfilment_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

// Staff naming a store they may not act for are refused PermissionDenied, whatever the store
// id: the refusal must not echo a huge id back (at four times its size for control
// characters), which breaks the connection it travels on.
func TestStaffNamingAHugeStoreIDAreRefusedInFewBytes(t *testing.T) {
	e := newEnv(t, envOptions{})
	storeID := strings.Repeat("\x01", 3<<20)
	_, err := e.store.AcceptOrder(e.asStaff("s1"), &fulfilmentv1.AcceptOrderRequest{StoreId: storeID, OrderId: "o1"})
	st := status.Convert(err)
	if st.Code() != codes.PermissionDenied {
		t.Fatalf("AcceptOrder for a 3 MiB store id: got %v %.200q, want PermissionDenied", st.Code(), st.Message())
	}
	if len(st.Message()) > 64<<10 {
		t.Errorf("refusal's message is %d bytes for a %d byte store id", len(st.Message()), len(storeID))
	}
}
