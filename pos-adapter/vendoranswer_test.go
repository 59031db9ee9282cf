package posadapter

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// Every vendor answer telling it to try again (503) says when, whatever made it: before, the
// one for a failed read of the store's secret had no Retry-After. Other answers carry none,
// unless their caller set their own (a 429's wait).
func TestEveryTryAgainAnswerToAVendorSaysWhen(t *testing.T) {
	for _, c := range []struct {
		code int
		set  string
		want string
	}{
		{http.StatusServiceUnavailable, "", vendorRetryAfter},
		{http.StatusTooManyRequests, "7", "7"},
		{http.StatusOK, "", ""},
		{http.StatusBadRequest, "", ""},
	} {
		w := httptest.NewRecorder()
		if c.set != "" {
			w.Header().Set("Retry-After", c.set)
		}
		writeVendor(w, c.code, VendorResult{Error: "try again"})
		if got := w.Result().Header.Get("Retry-After"); got != c.want {
			t.Errorf("a %d answer: Retry-After %q, want %q", c.code, got, c.want)
		}
	}
}
