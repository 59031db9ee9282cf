package storeid_test

import (
	"strings"
	"testing"

	"github.com/handoff-dev/handoff/internal/storeid"
)

func TestOnlyIDsAStoreCanHaveAreValid(t *testing.T) {
	for _, id := range []string{"sea-capitol-hill-01", "s1", "0", "a_b", strings.Repeat("a", 64)} {
		if !storeid.Valid(id) {
			t.Errorf("%q refused", id)
		}
	}
	for _, id := range []string{"", "-sea-ballard-01", "_s1", "Sea", "s 1", "s.1", "s/1", strings.Repeat("a", 65), "s1\n"} {
		if storeid.Valid(id) {
			t.Errorf("%q taken", id)
		}
	}
}
