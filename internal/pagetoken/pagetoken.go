// Package pagetoken makes the opaque page tokens of list RPCs: a keyset position (the sort key
// of the last item returned) serialised as URL-safe base64 JSON. Keyset paging stays fast and
// stable while rows are inserted, unlike OFFSET.
package pagetoken

import (
	"encoding/base64"
	"encoding/json"
	"fmt"

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

// Decode reads token into pos. An empty token leaves pos untouched and reports false; a token
// that does not decode is an InvalidArgument naming the page_token field.
func Decode(token string, pos any) (bool, error) {
	if token == "" {
		return false, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || json.Unmarshal(b, pos) != nil {
		return false, rpcerr.Invalid("page_token", "not a token returned by this list call")
	}
	return true, nil
}

// PageSize applies a list call's default and maximum, refusing negative sizes.
func PageSize(requested int32, def, max int32) (int, error) {
	switch {
	case requested < 0:
		return 0, rpcerr.Invalid("page_size", fmt.Sprintf("must be between 0 and %d, got %d", max, requested))
	case requested == 0:
		return int(def), nil
	case requested > max:
		return int(max), nil
	default:
		return int(requested), nil
	}
}
