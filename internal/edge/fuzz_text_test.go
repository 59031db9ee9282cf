package edge

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
)

// chunked reads src in the pieces sizes gives (each 1 to 64 bytes), as a network might.
type chunked struct {
	src   []byte
	sizes []byte
}

func (c *chunked) Read(p []byte) (int, error) {
	if len(c.src) == 0 {
		return 0, io.EOF
	}
	n := 7
	if len(c.sizes) > 0 {
		n, c.sizes = int(c.sizes[0]%64)+1, c.sizes[1:]
	}
	n = min(n, len(p), len(c.src))
	copy(p, c.src[:n])
	c.src = c.src[n:]
	return n, nil
}

func (c *chunked) Close() error { return nil }

// A media type is case-insensitive (RFC 9110 8.3.1): the text mode is served whatever the case
// of its content type, as connect serves the binary mode. Found by review: isGRPCWebText
// compared the type's start case-sensitively, so "Application/GRPC-Web-Text" was answered a bare
// HTTP 415 while "Application/GRPC-Web+Proto" was served.
func TestTheTextModeIsServedWhateverTheCaseOfItsContentType(t *testing.T) {
	mux := http.NewServeMux()
	Mount(mux, []string{"handoff.test.v1.Nothing"})
	h := WithGRPCWebText(mux)
	msg, err := proto.Marshal(&healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	body := base64.StdEncoding.EncodeToString(envelope(0, msg))
	for _, ct := range []string{"application/grpc-web-text", "Application/GRPC-Web-Text",
		"APPLICATION/GRPC-WEB-TEXT+PROTO", "application/Grpc-Web-Text; charset=UTF-8"} {
		req := httptest.NewRequest(http.MethodPost, "/grpc.health.v1.Health/Check", strings.NewReader(body))
		req.Header.Set("Content-Type", ct)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if got := rec.Header().Get("Content-Type"); rec.Code != http.StatusOK || got != grpcWebTextProto {
			t.Errorf("Content-Type %q: HTTP %d, Content-Type %q; want 200 and %s", ct, rec.Code, got, grpcWebTextProto)
			continue
		}
		raw, ok := decodeText(rec.Body.Bytes()) // padded after the message, as it is flushed
		if !ok || !bytes.Contains(raw, []byte("grpc-status: 0")) {
			t.Errorf("Content-Type %q: answered %q; want a text reply ending grpc-status 0", ct, rec.Body.String())
		}
	}
}

// FuzzTextBody: a text-mode body made of base64 pieces, each padded as a client encoding its
// messages one by one pads them, decodes to the pieces' bytes in order, however the network
// splits it; any other body is refused (errBadText) or decodes to what a whole-body base64
// decode says, never to other bytes.
func FuzzTextBody(f *testing.F) {
	f.Add([]byte("\x00\x00\x00\x00\x02\x08\x01"), []byte{3, 5}, []byte{1, 2, 3}, false)
	f.Add([]byte("abc"), []byte{1}, []byte{}, true)
	f.Add([]byte("QUJD=REVG"), []byte{}, []byte{4}, true)
	f.Fuzz(func(t *testing.T, data, cuts, sizes []byte, raw bool) {
		var body []byte
		var want []byte
		if raw {
			body = data // arbitrary bytes as the body
		} else {
			// data cut into pieces at cuts, each piece encoded with its padding
			rest := data
			for _, c := range cuts {
				if len(rest) == 0 {
					break
				}
				n := min(int(c)%32+1, len(rest))
				body = append(body, base64.StdEncoding.EncodeToString(rest[:n])...)
				rest = rest[n:]
			}
			body = append(body, base64.StdEncoding.EncodeToString(rest)...)
			want = data
		}
		tb := &textBody{src: &chunked{src: body, sizes: sizes}}
		got, err := io.ReadAll(tb)
		if !raw {
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("text body %q read as %x, %v; want %x", body, got, err, want)
			}
			return
		}
		if err != nil {
			if !errors.Is(err, errBadText) {
				t.Fatalf("text body %q: error %v, want errBadText", body, err)
			}
			return
		}
		// Accepted: it is whole 4-character groups, each decoding as StdEncoding says.
		var exp []byte
		for i := 0; i+4 <= len(body); i += 4 {
			g, gerr := base64.StdEncoding.DecodeString(string(body[i : i+4]))
			if gerr != nil {
				t.Fatalf("text body %q accepted as %x, but group %q is not base64: %v", body, got, body[i:i+4], gerr)
			}
			exp = append(exp, g...)
		}
		if len(body)%4 != 0 || !bytes.Equal(got, exp) {
			t.Fatalf("text body %q accepted as %x, want %x", body, got, exp)
		}
	})
}

// FuzzTextWriter: a binary response written in any pieces, with flushes anywhere, reaches a
// text-mode client as base64 that decodes, a 4-character group at a time, to the same bytes.
func FuzzTextWriter(f *testing.F) {
	f.Add([]byte("\x00\x00\x00\x00\x02\x08\x01\x80\x00\x00\x00\x0egrpc-status: 0"), []byte{1, 2, 200, 4})
	f.Add([]byte("a"), []byte{0})
	f.Fuzz(func(t *testing.T, data, plan []byte) {
		rec := httptest.NewRecorder()
		tw := &textWriter{w: rec}
		fw := &flushingTextWriter{textWriter: tw, f: rec}
		rest := data
		for _, p := range plan {
			if p >= 200 {
				fw.Flush()
				continue
			}
			n := min(int(p)%17, len(rest))
			if _, err := fw.Write(rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
		}
		if _, err := fw.Write(rest); err != nil {
			t.Fatal(err)
		}
		tw.finish()
		out := rec.Body.Bytes()
		if len(out)%4 != 0 {
			t.Fatalf("text answer %q is not whole base64 groups", out)
		}
		var got []byte
		for i := 0; i < len(out); i += 4 {
			g, err := base64.StdEncoding.DecodeString(string(out[i : i+4]))
			if err != nil {
				t.Fatalf("text answer %q: group %q: %v", out, out[i:i+4], err)
			}
			got = append(got, g...)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("text answer decodes to %x, want %x", got, data)
		}
		if ct := rec.Header().Get("Content-Type"); ct != grpcWebTextProto {
			t.Fatalf("content type %q", ct)
		}
	})
}

// FuzzClientAddress: behind trusted proxies, a request is charged to an address: its peer's
// when the peer is not a proxy, else one from X-Forwarded-For that is no proxy's (the
// rightmost), or the proxy's own when there is none. Whatever the header says, the address a
// request is charged to is an IP address, never a trusted proxy's unless it is the peer itself,
// and never one left of an untrusted entry the proxy chain wrote.
func FuzzClientAddress(f *testing.F) {
	f.Add("10.0.0.0/8, 2001:db8::/32", "10.1.2.3:4000", "1.2.3.4, 10.0.0.9")
	f.Add("10.0.0.1", "10.0.0.1:1", "::ffff:10.0.0.1")
	f.Add("10.0.0.0/8", "[::ffff:10.0.0.2]:1", "5.6.7.8, fe80::1%eth0")
	f.Add("192.168.0.0/16,::1", "[::1]:80", "evil, 9.9.9.9, 192.168.1.1 , ::ffff:192.168.1.2")
	f.Fuzz(func(t *testing.T, list, peer, xff string) {
		trusted, err := ParseTrustedProxies(list)
		if err != nil || len(trusted) == 0 {
			return
		}
		isTrusted := func(a netip.Addr) bool {
			for _, n := range trusted {
				if n.Contains(a.Unmap().AsSlice()) || n.Contains(a.AsSlice()) {
					return true
				}
			}
			return false
		}
		var seen string
		h := WithClientAddress(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = r.RemoteAddr }), trusted)
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.RemoteAddr = peer
		r.Header.Set("X-Forwarded-For", xff)
		h.ServeHTTP(httptest.NewRecorder(), r)
		if seen == peer {
			return
		}
		// Replaced: only for a trusted peer, by an address of the header that is no proxy's.
		_, pip, ok := peerIP(peer)
		if !ok || !isTrusted(pip) {
			t.Fatalf("peer %q (untrusted) charged as %q", peer, seen)
		}
		host, _, err := net.SplitHostPort(seen)
		if err != nil {
			t.Fatalf("charged to %q: %v", seen, err)
		}
		a, err := netip.ParseAddr(host)
		if err != nil {
			t.Fatalf("charged to %q, not an IP address", seen)
		}
		if isTrusted(a) {
			t.Fatalf("peer %q, X-Forwarded-For %q, proxies %q: charged to %q, a trusted proxy's address", peer, xff, list, seen)
		}
		named := false
		for _, e := range strings.Split(xff, ",") {
			e = strings.TrimSpace(e)
			if h, _, err := net.SplitHostPort(e); err == nil {
				e = h
			}
			e, _, _ = strings.Cut(strings.Trim(e, "[]"), "%") // a zone, even an empty one, is dropped
			if x, err := netip.ParseAddr(e); err == nil && x.WithZone("").Unmap() == a.WithZone("").Unmap() {
				named = true
			}
		}
		if !named {
			t.Fatalf("charged to %q, which X-Forwarded-For %q does not name", seen, xff)
		}
	})
}
