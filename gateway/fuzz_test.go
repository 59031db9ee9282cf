package gateway_test

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/handoff-dev/handoff/gateway"
	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/proto/handoff/catalog/v1/catalogv1connect"
)

// fuzzGateway is a gateway whose backends are down: every frame that parses ends as a clean
// Unavailable, every frame that does not as a clean protocol error, never a panic or a hang.
func fuzzGateway(f *testing.F) (http.Handler, *auth.KeySet) {
	f.Helper()
	conn, err := grpc.NewClient(testenv.FreeAddr(f), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { conn.Close() })
	keys, err := auth.ParseKeySet("k:" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32))))
	if err != nil {
		f.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{Catalog: conn, Inventory: conn, Cart: conn, Fulfilment: conn, Keys: keys,
		RateLimits: gateway.RateLimits{PerCaller: 1e9, PerCallerBurst: 1e9, PerAddress: 1e9, PerAddressBurst: 1e9, Checkout: 1e9, CheckoutBurst: 1e9}})
	if err != nil {
		f.Fatal(err)
	}
	return gw.Handler(), keys
}

func frame(flags byte, payload []byte) []byte {
	b := make([]byte, 5, 5+len(payload))
	b[0] = flags
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	return append(b, payload...)
}

// FuzzGRPCWebFrames sends arbitrary bodies as gRPC-web requests: the gateway must answer each
// with a gRPC status (never a panic, never a 5xx without one) and stay up.
func FuzzGRPCWebFrames(f *testing.F) {
	h, _ := fuzzGateway(f)
	f.Add(frame(0, []byte{0x08, 0x01}), false)
	f.Add(frame(0, nil), false)
	f.Add(frame(0x80, []byte("grpc-status: 0\r\n")), false)
	f.Add(frame(1, []byte{0xff, 0xff}), false)
	f.Add([]byte{0, 0xff, 0xff, 0xff, 0xff}, false) // claims 4 GiB
	f.Add([]byte{0, 0, 0}, true)
	f.Add([]byte(base64.StdEncoding.EncodeToString(frame(0, []byte{0x0a, 0x03, 'a', 'b', 'c'}))), true)
	f.Fuzz(func(t *testing.T, body []byte, text bool) {
		ct := "application/grpc-web+proto"
		if text {
			ct = "application/grpc-web-text+proto"
		}
		req := httptest.NewRequest(http.MethodPost, catalogv1connect.CatalogServiceListProductsProcedure, bytes.NewReader(body))
		req.Header.Set("Content-Type", ct)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		code := rec.Header().Get("Grpc-Status")
		respBody := rec.Body.Bytes()
		if text && rec.Header().Get("Content-Type") == "application/grpc-web-text+proto" {
			var frames []byte
			if err := textFrames(bytes.NewReader(respBody), func(flags byte, payload []byte) bool {
				frames = append(frames, frame(flags, payload)...)
				return true
			}); err != nil {
				t.Fatalf("text-mode answer to body %x: %v", body, err)
			}
			respBody = frames
		}
		if code == "" {
			code = trailerStatus(respBody)
		}
		if code == "" && rec.Code == http.StatusOK {
			t.Fatalf("HTTP 200 without a grpc-status for body %x", body)
		}
		if code != "" {
			if n, err := strconv.Atoi(code); err != nil || n < 0 || n > 16 {
				t.Fatalf("grpc-status %q is not a gRPC code", code)
			}
		}
	})
}

// trailerStatus finds grpc-status in a gRPC-web trailer frame of the response body.
func trailerStatus(body []byte) string {
	for len(body) >= 5 {
		n := int(binary.BigEndian.Uint32(body[1:5]))
		if 5+n > len(body) {
			return ""
		}
		if body[0]&0x80 != 0 {
			for _, line := range strings.Split(string(body[5:5+n]), "\r\n") {
				if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "grpc-status") {
					return strings.TrimSpace(v)
				}
			}
		}
		body = body[5+n:]
	}
	return ""
}

// FuzzBearerTokens: no string verifies unless Handoff signed it, and none panics.
func FuzzBearerTokens(f *testing.F) {
	_, keys := fuzzGateway(f)
	good, err := keys.Issue(auth.Principal{Subject: "alice", Role: auth.RoleCustomer}, 3600e9)
	if err != nil {
		f.Fatal(err)
	}
	f.Add("Bearer " + good)
	f.Add("Bearer " + good[:len(good)-3] + "AAA")
	f.Add("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
	f.Add("bearer   ")
	f.Add("Basic dXNlcjpwYXNz")
	f.Fuzz(func(t *testing.T, header string) {
		p, ok, err := auth.DefaultPolicy().Authorize(t.Context(), keys, "/handoff.cart.v1.CartService/GetCart", header)
		if err == nil && (!ok || p.Subject == "") {
			t.Fatalf("header %q admitted without a verified caller", header)
		}
		if err == nil && !strings.Contains(header, good[:20]) {
			t.Fatalf("header %q verified but is not the token Handoff signed", header)
		}
	})
}
