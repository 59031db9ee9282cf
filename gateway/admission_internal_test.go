package gateway

import (
	"context"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/proto/handoff/cart/v1/cartv1connect"
)

// A refused token is charged to its address whatever the state of its caller's context: a
// client cancelling its calls (or sending them out of time) gets its bad tokens checked no
// more often than any other, and is told they are refused, not that it ran out of time.
func TestARefusedTokenIsChargedToItsAddressEvenWhenItsCallerIsOutOfTime(t *testing.T) {
	keys, err := auth.ParseKeySet("k:" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32))))
	if err != nil {
		t.Fatal(err)
	}
	a := newAdmission(keys, RateLimits{PerCaller: 100, PerCallerBurst: 100, PerAddress: 0.001, PerAddressBurst: 3, Checkout: 1, CheckoutBurst: 1})
	h := http.Header{}
	h.Set("Authorization", "Bearer not.a.token")
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	codes := map[connect.Code]int{}
	for range 10 {
		_, err := a.admit(ctx, cartv1connect.CartServiceGetCartProcedure, h, "203.0.113.9:4711")
		codes[connect.CodeOf(err)]++
	}
	if codes[connect.CodeUnauthenticated] != 3 || codes[connect.CodeResourceExhausted] != 7 {
		t.Fatalf("10 bad tokens from one address, out of time, its burst 3: answers %v; want 3 refused, then 7 over the address's limit", codes)
	}
}
