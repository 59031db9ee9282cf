// Package pagetoken makes the opaque page tokens of list RPCs: a keyset position (the sort key
// of the last item returned) serialised as URL-safe base64 JSON. Keyset paging stays fast and
// stable while rows are inserted, unlike OFFSET.
package pagetoken

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/handoff-dev/handoff/internal/rpcerr"
)

// Encode returns the token for position pos.
func Encode(pos any) string {
	b, err := json.Marshal(pos)
	if err != nil {
		// Positions are plain structs of strings and numbers; failure is a programming error.
		panic(fmt.Sprintf("pagetoken: encode %T: %v", pos, err))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// Checker is a position whose fields a query reads as types of their own (a uuid, say): Check
// says whether they are such values, so that a forged token is refused like any other instead
// of failing in the query as an internal error.
type Checker interface {
	Check() error
}

// Decode reads token into pos. An empty token leaves pos untouched and reports false; a token
// Encode did not make for a position of pos's type (one that does not decode, lacks fields or
// has others, "{}" say, or one its Check refuses) is an InvalidArgument naming the page_token
// field, and so is one holding a NUL, which no stored key has and Postgres cannot take.
func Decode(token string, pos any) (bool, error) {
	if token == "" {
		return false, nil
	}
	invalid := rpcerr.Invalid("page_token", "not a token returned by this list call")
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || json.Unmarshal(b, pos) != nil {
		return false, invalid
	}
	var values any
	if json.Unmarshal(b, &values) != nil || holdsNUL(values) {
		return false, invalid
	}
	// Encode's output is canonical: a token that does not encode back to itself is forged.
	if again, err := json.Marshal(pos); err != nil || !bytes.Equal(again, b) {
		return false, invalid
	}
	if c, ok := pos.(Checker); ok && c.Check() != nil {
		return false, invalid
	}
	return true, nil
}

// holdsNUL reports whether a decoded JSON value has a string with a NUL anywhere in it.
func holdsNUL(v any) bool {
	switch v := v.(type) {
	case string:
		return strings.IndexByte(v, 0) >= 0
	case []any:
		return slices.ContainsFunc(v, holdsNUL)
	case map[string]any:
		for k, e := range v {
			if strings.IndexByte(k, 0) >= 0 || holdsNUL(e) {
				return true
			}
		}
	}
	return false
}

// PageSize applies a list call's default and maximum, refusing negative sizes. A size above the
// maximum is read as the maximum, as AIP-158 asks: the caller pages on with the token.
func PageSize(requested int32, def, max int32) (int, error) {
	switch {
	case requested < 0:
		return 0, rpcerr.Invalid("page_size", fmt.Sprintf("must not be negative (0 means %d, at most %d a page), got %d", def, max, requested))
	case requested == 0:
		return int(def), nil
	case requested > max:
		return int(max), nil
	default:
		return int(requested), nil
	}
}
