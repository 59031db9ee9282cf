// Package pagetoken makes the opaque page tokens of list RPCs: a keyset position (the sort key
// of the last item returned) and the call it belongs to, serialised as URL-safe base64 JSON.
// Keyset paging stays fast and stable while rows are inserted, unlike OFFSET.
package pagetoken

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/handoff-dev/handoff/internal/rpcerr"
)

// Encode returns the token for position pos of the list call req asked for. The token is bound
// to req's other arguments (see Decode).
func Encode(req proto.Message, pos any) string {
	p, err := json.Marshal(pos)
	if err != nil {
		// Positions are plain structs of strings and numbers; failure is a programming error.
		panic(fmt.Sprintf("pagetoken: encode %T: %v", pos, err))
	}
	b, err := json.Marshal(envelope{Call: fingerprint(req), Pos: p})
	if err != nil {
		panic(fmt.Sprintf("pagetoken: encode %T: %v", pos, err))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// envelope is a token's content: the call it continues and the position in it.
type envelope struct {
	Call string          `json:"c"`
	Pos  json.RawMessage `json:"p"`
}

// Checker is a position whose fields a query reads as types of their own (a uuid, say): Check
// says whether they are such values, so that a forged token is refused like any other instead
// of failing in the query as an internal error.
type Checker interface {
	Check() error
}

// Positions keeping a time as Unix microseconds (an int64 any token may set) keep it between
// these: years 1 to 9999, which Postgres's timestamptz holds, as do Go's time.Time and the
// protobuf Timestamp. Outside them the query would fail as an internal error ("timestamp out of
// range"), or the time overflow on its way there.
var (
	minUnixMicro = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro()
	maxUnixMicro = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro() - 1
)

// CheckUnixMicro is for a Checker whose position holds a time as Unix microseconds: it refuses
// one outside years 1 to 9999, which no stored row has.
func CheckUnixMicro(us int64) error {
	if us < minUnixMicro || us > maxUnixMicro {
		return fmt.Errorf("time %d µs from the Unix epoch is outside years 1 to 9999", us)
	}
	return nil
}

// Decode reads req's page_token into pos. An empty token leaves pos untouched and reports
// false. These are InvalidArgument errors naming the page_token field:
//   - a token Encode did not make for a position of pos's type (one that does not decode, lacks
//     fields or has others, "{}" say, or one its Check refuses);
//   - one holding a NUL, which no stored key has and Postgres cannot take;
//   - one made for a call with other arguments. A position means nothing under other filters: it
//     would skip or repeat items without a word. AIP-158 asks for the refusal. Only page_size
//     may change from page to page.
func Decode(req proto.Message, pos any) (bool, error) {
	token := tokenOf(req)
	if token == "" {
		return false, nil
	}
	invalid := rpcerr.Invalid("page_token", "not a token returned by this list call")
	// Only the token returned, as it was: decoding would also take one with line breaks in it,
	// or stray bits in its last character, for it.
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || base64.RawURLEncoding.EncodeToString(b) != token {
		return false, invalid
	}
	var env envelope
	if json.Unmarshal(b, &env) != nil || json.Unmarshal(env.Pos, pos) != nil {
		return false, invalid
	}
	var values any
	if json.Unmarshal(b, &values) != nil || holdsNUL(values) {
		return false, invalid
	}
	// Encode's output is canonical: a token that does not encode back to itself is forged.
	p, err := json.Marshal(pos)
	if err != nil {
		return false, invalid
	}
	if again, err := json.Marshal(envelope{Call: env.Call, Pos: p}); err != nil || !bytes.Equal(again, b) {
		return false, invalid
	}
	if c, ok := pos.(Checker); ok && c.Check() != nil {
		return false, invalid
	}
	if env.Call != fingerprint(req) {
		return false, rpcerr.Invalid("page_token", "made for this list call with other arguments: send every field but page_size as on the first page, or start again without a token")
	}
	return true, nil
}

// tokenOf is req's page_token. Every list request has one; one without is a programming error.
func tokenOf(req proto.Message) string {
	r := req.ProtoReflect()
	f := r.Descriptor().Fields().ByName(pageToken)
	if f == nil || f.Kind() != protoreflect.StringKind {
		panic(fmt.Sprintf("pagetoken: %s has no string field page_token", r.Descriptor().FullName()))
	}
	return r.Get(f).String()
}

const pageToken, pageSize protoreflect.Name = "page_token", "page_size"

// fingerprint names a list call by its request's type and its arguments but the paging ones: a
// short hash of the type's full name and the request's deterministic encoding with page_token
// and page_size cleared. Copies of one build encode alike, so a token made by one copy is read
// by any other. The name keeps two list calls whose requests encode alike (both empty, say)
// from taking each other's tokens.
func fingerprint(req proto.Message) string {
	m := proto.Clone(req).ProtoReflect()
	for _, name := range []protoreflect.Name{pageToken, pageSize} {
		if f := m.Descriptor().Fields().ByName(name); f != nil {
			m.Clear(f)
		}
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m.Interface())
	if err != nil {
		panic(fmt.Sprintf("pagetoken: encode %s: %v", m.Descriptor().FullName(), err))
	}
	h := sha256.New()
	h.Write([]byte(m.Descriptor().FullName()))
	h.Write([]byte{0})
	h.Write(b)
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:12])
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
