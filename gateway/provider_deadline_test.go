package gateway_test

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/handoff-dev/handoff/gateway"
	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/auth/authtest"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/proto/handoff/cart/v1/cartv1connect"
)

// A call whose token names an identity provider's key still being fetched (a provider slow to
// answer) waits for it no longer than the timeout its client asked for (grpc-timeout, read by
// the gateway before the call is admitted) and is answered DEADLINE_EXCEEDED, not refused.
func TestACallWaitsForANewProviderKeyOnlyUntilItsTimeout(t *testing.T) {
	idp := authtest.New(t)
	keys, err := auth.ParseKeySet("k:" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32))))
	if err != nil {
		t.Fatal(err)
	}
	idp.TrustedBy(t, keys, time.Hour)
	conn, err := grpc.NewClient(testenv.FreeAddr(t), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	gw, err := gateway.New(gateway.Config{Catalog: conn, Inventory: conn, Cart: conn, Fulfilment: conn, Keys: keys, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	idp.AddKey("es-2", jwt.SigningMethodES256, true)
	idp.Stall() // released when the test ends

	for _, timeout := range []struct{ header, value string }{{"Grpc-Timeout", "300m"}, {"Connect-Timeout-Ms", "300"}} {
		req := httptest.NewRequest(http.MethodPost, cartv1connect.CartServiceGetCartProcedure, bytes.NewReader([]byte{0, 0, 0, 0, 0}))
		if timeout.header == "Grpc-Timeout" {
			req.Header.Set("Content-Type", "application/grpc-web+proto")
		} else {
			req.Header.Set("Content-Type", "application/proto")
			req.Header.Set("Connect-Protocol-Version", "1")
		}
		req.Header.Set(timeout.header, timeout.value)
		req.Header.Set("Authorization", "Bearer "+idp.Sign("es-2", authtest.Customer("alice")))
		req.RemoteAddr = "203.0.113.9:4711"
		rec := httptest.NewRecorder()
		start := time.Now()
		gw.Handler().ServeHTTP(rec, req)
		took := time.Since(start)
		status, body := rec.Header().Get("Grpc-Status"), rec.Body.String()
		if took > 5*time.Second {
			t.Errorf("%s %s: the call was held %v while the provider stalled", timeout.header, timeout.value, took)
		}
		if status != "4" && !strings.Contains(body, "deadline_exceeded") {
			t.Errorf("%s %s: answered grpc-status %q, HTTP %d %q; want DEADLINE_EXCEEDED", timeout.header, timeout.value, status, rec.Code, body)
		}
	}
}
