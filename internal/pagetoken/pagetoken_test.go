package pagetoken_test

import (
	"encoding/base64"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/pagetoken"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// call is a list request continued with token: one of coffee, three to a page.
func call(token string) *catalogv1.ListProductsRequest {
	return &catalogv1.ListProductsRequest{CategoryId: "cat-coffee", PageSize: 3, PageToken: token}
}

type position struct {
	Name string `json:"n"`
	ID   string `json:"i"`
}

func TestTokenRoundTrips(t *testing.T) {
	tok := pagetoken.Encode(call(""), position{Name: "Latte", ID: "prd-latte"})
	var got position
	ok, err := pagetoken.Decode(call(tok), &got)
	if err != nil || !ok || got != (position{Name: "Latte", ID: "prd-latte"}) {
		t.Fatalf("Decode = %v, %v, %+v", ok, err, got)
	}
	// A key may hold anything but a NUL, a backslash and "u0000" included.
	odd := position{Name: `C:\u0000 blend`, ID: "prd-odd"}
	if ok, err := pagetoken.Decode(call(pagetoken.Encode(call(""), odd)), &got); err != nil || !ok || got != odd {
		t.Fatalf("Decode of a key with a backslash = %v, %v, %+v", ok, err, got)
	}
	if ok, err := pagetoken.Decode(call(""), &got); ok || err != nil {
		t.Fatalf("empty token: ok=%v err=%v", ok, err)
	}
}

// A token continues the call it was made for: under other filters its position would skip or
// repeat items without a word, so it is refused naming page_token (AIP-158). The page size
// may change from page to page, and the token made by one page is read on the next whatever
// token that page itself was given.
func TestATokenIsForTheCallItWasMadeFor(t *testing.T) {
	first := call("")
	tok := pagetoken.Encode(first, position{Name: "Latte", ID: "prd-latte"})
	var got position
	for _, other := range []*catalogv1.ListProductsRequest{
		{CategoryId: "cat-tea", PageSize: 3, PageToken: tok},
		{PageSize: 3, PageToken: tok},
		{CategoryId: "cat-coffee", Query: "oat", PageSize: 3, PageToken: tok},
		{CategoryId: "cat-coffee", IncludeArchived: true, PageSize: 3, PageToken: tok},
	} {
		_, err := pagetoken.Decode(other, &got)
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), "page_token") ||
			!strings.Contains(st.Message(), "other arguments") {
			t.Errorf("a token used with %v: %v; want InvalidArgument naming page_token", other, err)
		}
	}
	bigger := call(tok)
	bigger.PageSize = 50
	if ok, err := pagetoken.Decode(bigger, &got); !ok || err != nil {
		t.Errorf("the same call with another page size: %v, %v", ok, err)
	}
	next := pagetoken.Encode(call(tok), position{Name: "Mocha", ID: "prd-mocha"})
	if ok, err := pagetoken.Decode(call(next), &got); !ok || err != nil || got.ID != "prd-mocha" {
		t.Errorf("the third page: %v, %v, %+v", ok, err, got)
	}
}

func TestGarbageTokenIsInvalidArgumentNamingTheField(t *testing.T) {
	var got position
	_, err := pagetoken.Decode(call("%%%not-base64"), &got)
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || st.Message()[:10] != "page_token" {
		t.Fatalf("err = %v", err)
	}
}

// A token Encode did not make is refused, even one that decodes: an empty or partial position
// would list from the start as if it were a first page, and a NUL would reach Postgres.
func TestForgedTokensAreRefused(t *testing.T) {
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	// The call's part of a real token, so that only the position is wrong.
	raw, _ := base64.RawURLEncoding.DecodeString(pagetoken.Encode(call(""), position{Name: "Latte", ID: "prd-latte"}))
	c := strings.SplitN(string(raw), `"p":`, 2)[0]
	if !strings.HasPrefix(c, `{"c":"`) {
		t.Fatalf("a token's content is %s; this test expects the call first", raw)
	}
	for _, tok := range []string{
		b64(`{}`),
		b64(`{"n":"Latte","i":"prd-latte"}`), // a position alone, as tokens were before they named their call
		b64(c + `"p":{}}`),
		b64(c + `"p":{"x":1}}`),
		b64(c + `"p":{"n":"Latte"}}`),
		b64(c + `"p":{"N":"Latte","i":"prd-latte"}}`),
		b64(c + `"p":{"n":"Latte","i":"prd-latte","x":1}}`),
		b64(c + `"p":{"n":"Latte","i":"prd\u0000"}}`),
		b64(c + `"p": {"n":"Latte","i":"prd-latte"}}`),
		b64(c + `"p":{"n":"Latte","i":"prd-latte"},"x":1}`),
		b64(` ` + c + `"p":{"n":"Latte","i":"prd-latte"}}`),
	} {
		var got position
		_, err := pagetoken.Decode(call(tok), &got)
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), "page_token") {
			t.Errorf("Decode(%s) = %v; want InvalidArgument naming page_token", tok, err)
		}
	}
}

func TestPageSizeDefaultsCapsAndRefusesNegative(t *testing.T) {
	for _, c := range []struct{ in, want int32 }{{0, 20}, {5, 5}, {500, 100}} {
		if got, err := pagetoken.PageSize(c.in, 20, 100); err != nil || got != int(c.want) {
			t.Errorf("PageSize(%d) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	if _, err := pagetoken.PageSize(-1, 20, 100); status.Code(err) != codes.InvalidArgument {
		t.Errorf("negative page size: err = %v", err)
	}
}

// keyed is a position whose ID a query reads as a number of its own kind.
type keyed struct {
	ID string `json:"i"`
}

func (k *keyed) Check() error {
	if _, err := strconv.Atoi(k.ID); err != nil {
		return err
	}
	return nil
}

// A token of the right shape whose values its position's Check refuses is forged, and refused
// like any other: the query would otherwise fail on it as an internal error.
func TestTokensThePositionsCheckRefusesAreRefused(t *testing.T) {
	var got keyed
	if _, err := pagetoken.Decode(call(pagetoken.Encode(call(""), keyed{ID: "not-a-number"})), &got); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a token its position's Check refuses: %v; want InvalidArgument", err)
	}
	if ok, err := pagetoken.Decode(call(pagetoken.Encode(call(""), keyed{ID: "42"})), &got); !ok || err != nil || got.ID != "42" {
		t.Errorf("a token its position's Check takes: %v, %v, %v", ok, err, got)
	}
}

// A time kept as Unix microseconds is one Postgres holds (years 1 to 9999) or refused.
func TestCheckUnixMicroKeepsTimesPostgresHolds(t *testing.T) {
	for _, ok := range []time.Time{
		time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Now(),
		time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC),
	} {
		if err := pagetoken.CheckUnixMicro(ok.UnixMicro()); err != nil {
			t.Errorf("CheckUnixMicro(%s) = %v; want nil", ok, err)
		}
	}
	for _, bad := range []int64{
		math.MinInt64, math.MaxInt64, -300000000000000000,
		time.Date(0, 12, 31, 23, 59, 59, 999999000, time.UTC).UnixMicro(),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro(),
	} {
		if err := pagetoken.CheckUnixMicro(bad); err == nil {
			t.Errorf("CheckUnixMicro(%d) = nil; want an error", bad)
		}
	}
}

// A token continues only the list call it was made for, also when another list call's request
// encodes alike (both empty here) and its position has the same shape: ListTerminals' token
// (the pos-adapter's, admin) is refused by ListOrders (fulfilment's, a shopper's). It used to be
// taken, the request's type not being part of what a token is bound to.
func TestATokenOfAnotherListCallIsRefused(t *testing.T) {
	type timeID struct {
		Time int64  `json:"t"`
		ID   string `json:"i"`
	}
	tok := pagetoken.Encode(&posv1.ListTerminalsRequest{}, timeID{Time: 1_700_000_000_000_000, ID: "term-1"})
	var pos timeID
	ok, err := pagetoken.Decode(&fulfilmentv1.ListOrdersRequest{PageToken: tok}, &pos)
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "page_token") {
		t.Fatalf("ListOrders given ListTerminals' token = %v, %v, %+v; want InvalidArgument naming page_token", ok, err, pos)
	}
	if ok, err := pagetoken.Decode(&posv1.ListTerminalsRequest{PageToken: tok}, &pos); !ok || err != nil {
		t.Fatalf("ListTerminals given its own token = %v, %v", ok, err)
	}
}
