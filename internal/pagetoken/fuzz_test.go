package pagetoken_test

import (
	"encoding/base64"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/pagetoken"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
)

// fuzzPosition has the shapes positions have in the services: strings and an int64 time.
type fuzzPosition struct {
	Time int64  `json:"t"`
	Name string `json:"n"`
	ID   string `json:"i"`
}

func (p *fuzzPosition) Check() error { return pagetoken.CheckUnixMicro(p.Time) }

// FuzzDecode: any token either decodes to a position that Encode turns back into that very
// token (Encode's output is canonical; Decode accepts nothing else), or is refused as
// InvalidArgument naming page_token. Never a panic, never a position outside Check's bounds.
func FuzzDecode(f *testing.F) {
	req := func(tok string) *catalogv1.ListProductsRequest {
		return &catalogv1.ListProductsRequest{CategoryId: "cat-coffee", PageSize: 3, PageToken: tok}
	}
	f.Add(pagetoken.Encode(req(""), fuzzPosition{Time: 1700000000000000, Name: "Latte", ID: "prd-latte"}))
	f.Add(pagetoken.Encode(req(""), fuzzPosition{Name: `a\u0000"<>&`, ID: "x"}))
	f.Add(base64.RawURLEncoding.EncodeToString([]byte(`{"c":"x","p":{}}`)))
	f.Add(base64.RawURLEncoding.EncodeToString([]byte(`{"c":"x","p":{"t":1,"n":"a","i":"b"},"p":{"t":2,"n":"a","i":"b"}}`)))
	f.Add(base64.RawURLEncoding.EncodeToString([]byte(`{"C":"x","P":{"T":1,"N":"a","I":"b"}}`)))
	f.Add("%%%")
	f.Fuzz(func(t *testing.T, tok string) {
		var pos fuzzPosition
		ok, err := pagetoken.Decode(req(tok), &pos)
		if err != nil {
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), "page_token") {
				t.Fatalf("token %q refused as %v %q, want InvalidArgument naming page_token", tok, st.Code(), st.Message())
			}
			return
		}
		if tok == "" {
			if ok {
				t.Fatal("empty token reported a position")
			}
			return
		}
		if !ok {
			t.Fatalf("token %q: no error and no position", tok)
		}
		if pos.Check() != nil {
			t.Fatalf("token %q accepted with time %d outside the bounds", tok, pos.Time)
		}
		if strings.ContainsRune(pos.Name, 0) || strings.ContainsRune(pos.ID, 0) {
			t.Fatalf("token %q accepted with a NUL", tok)
		}
		if again := pagetoken.Encode(req(""), pos); again != tok {
			t.Fatalf("token %q accepted as %+v, which encodes as %q", tok, pos, again)
		}
	})
}

// FuzzRoundTrip: a token made for a position reads back as that position, for every key a
// stored row can have (valid UTF-8 without NUL: the edges refuse other text).
func FuzzRoundTrip(f *testing.F) {
	f.Add(int64(0), "Latte", "prd-latte", "cat-coffee")
	f.Add(int64(-62135596800000000), `C:\u0000 blend`, "\u2028", "")
	f.Add(int64(253402300799999999), "<&>", "\ufffd", "x")
	f.Fuzz(func(t *testing.T, us int64, name, id, category string) {
		if !utf8.ValidString(name) || !utf8.ValidString(id) || !utf8.ValidString(category) ||
			strings.ContainsRune(name+id+category, 0) || pagetoken.CheckUnixMicro(us) != nil {
			return // outside what a token is made from
		}
		first := &catalogv1.ListProductsRequest{CategoryId: category, PageSize: 3}
		want := fuzzPosition{Time: us, Name: name, ID: id}
		tok := pagetoken.Encode(first, want)
		var got fuzzPosition
		ok, err := pagetoken.Decode(&catalogv1.ListProductsRequest{CategoryId: category, PageSize: 7, PageToken: tok}, &got)
		if err != nil || !ok || got != want {
			t.Fatalf("Encode(%+v) read back as %v, %v, %+v", want, ok, err, got)
		}
		// The same token under another filter is refused.
		if _, err := pagetoken.Decode(&catalogv1.ListProductsRequest{CategoryId: category + "x", PageToken: tok}, &got); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("token for category %q accepted for %q: %v", category, category+"x", err)
		}
	})
}

// FuzzPageSize: an accepted size is between 1 and the maximum.
func FuzzPageSize(f *testing.F) {
	f.Add(int32(0))
	f.Add(int32(-1))
	f.Add(int32(1 << 30))
	f.Fuzz(func(t *testing.T, n int32) {
		got, err := pagetoken.PageSize(n, 20, 100)
		if err != nil {
			if n >= 0 {
				t.Fatalf("PageSize(%d) refused: %v", n, err)
			}
			return
		}
		if got < 1 || got > 100 {
			t.Fatalf("PageSize(%d) = %d", n, got)
		}
	})
}
