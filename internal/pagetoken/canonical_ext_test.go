package pagetoken_test

import (
	"encoding/base64"
	"testing"

	"github.com/handoff-dev/handoff/internal/pagetoken"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
)

// Only the token returned is taken: base64 decoding alone would also read one with line breaks
// in it as the same position.
func TestATokenWithALineBreakIsNotTheTokenReturned(t *testing.T) {
	req := func(tok string) *catalogv1.ListProductsRequest {
		return &catalogv1.ListProductsRequest{CategoryId: "cat-coffee", PageSize: 3, PageToken: tok}
	}
	tok := pagetoken.Encode(req(""), fuzzPosition{Time: 1700000000000000, Name: "Latte", ID: "prd-latte"})
	var pos fuzzPosition
	if ok, err := pagetoken.Decode(req(tok), &pos); !ok || err != nil {
		t.Fatalf("the token returned: %v, %v", ok, err)
	}
	for _, other := range []string{tok[:5] + "\n" + tok[5:], tok + "\r\n", "\n" + tok} {
		if ok, err := pagetoken.Decode(req(other), &pos); err == nil {
			t.Errorf("token %q (not the one returned) accepted: ok=%v pos=%+v", other, ok, pos)
		}
	}
}

// A rolling upgrade: every token an older copy made (Encode has always written unpadded URL
// base64, whose last character carries no stray bits) is taken by the newer one.
func TestEveryTokenAnOlderCopyMadeIsTaken(t *testing.T) {
	for n := range 300 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(0xff - i*7)
		}
		old := base64.RawURLEncoding.EncodeToString(b)
		if again, err := base64.RawURLEncoding.DecodeString(old); err != nil || base64.RawURLEncoding.EncodeToString(again) != old {
			t.Fatalf("%d bytes: a token an older copy made is not read back as itself: %v", n, err)
		}
	}
}
