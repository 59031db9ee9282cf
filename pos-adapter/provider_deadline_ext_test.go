package posadapter_test

import (
	"bytes"
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/auth/authtest"
	"github.com/handoff-dev/handoff/proto/handoff/pos/v1/posv1connect"
)

// A staff call whose token names an identity provider's key still being fetched (a provider
// slow to answer) waits for it no longer than its own grpc-timeout, read before the call is
// admitted, and is answered DEADLINE_EXCEEDED, not refused.
func TestAStaffCallWaitsForANewProviderKeyOnlyUntilItsTimeout(t *testing.T) {
	idp := authtest.New(t)
	e := newEnv(t, func(e *env) {
		keys, err := auth.ParseKeySet(e.keySpec)
		if err != nil {
			t.Fatal(err)
		}
		idp.TrustedBy(t, keys, time.Hour)
		e.cfg.Keys = keys
	})
	idp.AddKey("es-2", jwt.SigningMethodES256, true)
	idp.Stall() // released when the test ends

	req, err := http.NewRequest(http.MethodPost, e.base+posv1connect.TerminalServiceListStoreOrdersProcedure, bytes.NewReader([]byte{0, 0, 0, 0, 0}))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc-web+proto")
	req.Header.Set("Grpc-Timeout", "300m")
	req.Header.Set("Authorization", "Bearer "+idp.Sign("es-2", authtest.Staff("till-7", "sea-1")))
	start := time.Now()
	res, err := e.http1.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the call was held %v while the provider stalled", took)
	}
	if got := res.Header.Get("Grpc-Status"); got != "4" {
		t.Errorf("answered grpc-status %q (%s); want 4, DEADLINE_EXCEEDED", got, res.Header.Get("Grpc-Message"))
	}
}
