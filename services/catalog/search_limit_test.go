package catalog_test

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
)

// A shopper's search text is free input: one too long to search (a pasted document, a hostile
// anonymous client) is refused naming query, not failed as an internal error after Postgres
// was made to split megabytes; the longest taken is searched.
func TestASearchTextTooLongIsRefusedNamingQuery(t *testing.T) {
	e := newEnv(t)
	e.loadDemo(t)
	words := make([]string, 40000)
	for i := range words {
		words[i] = fmt.Sprintf("w%031x", i) // 32-character distinct words: ~1.3 MB, under gRPC's 4 MB
	}
	_, err := e.public.ListProducts(t.Context(), &catalogv1.ListProductsRequest{Query: strings.Join(words, " ")})
	wantCode(t, err, codes.InvalidArgument, "query")
	_, err = e.public.ListProducts(t.Context(), &catalogv1.ListProductsRequest{Query: strings.Repeat("é", 501)})
	wantCode(t, err, codes.InvalidArgument, "query")
	if _, err := e.public.ListProducts(t.Context(), &catalogv1.ListProductsRequest{Query: "latte " + strings.Repeat("é", 494)}); err != nil {
		t.Fatalf("a search text of 500 characters: %v", err)
	}
}
