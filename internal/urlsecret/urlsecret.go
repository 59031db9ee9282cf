// Package urlsecret keeps the secrets a webhook URL may carry (a password, a token in its path
// as Slack's do, or in its query string) out of the errors a failed delivery leaves: those are
// logged, stored and listed to operators. An error names the receiver by its Origin, and what
// the receiver answered is quoted only as a Snippet with the URL's parts cut out, since a
// receiver may echo them ("Cannot POST /hooks/…").
package urlsecret

import (
	"io"
	"net/url"
	"slices"
	"strings"
)

// Origin is u's scheme://host, how an error names the receiver.
func Origin(u *url.URL) string { return u.Scheme + "://" + u.Host }

// tokenLen is the shortest path segment or query value cut out on its own: shorter ones
// ("hooks", "v1") are not worth it.
const tokenLen = 8

// Parts are the parts of the URL raw (parsed as u) to keep out of errors, longest first: the
// URL itself, its user information and password, its path, query string and fragment (escaped
// and not), and each path segment and query value long enough to be a token.
func Parts(raw string, u *url.URL) []string {
	parts := []string{raw, u.String(), u.Path, u.EscapedPath(), u.RawPath, u.RawQuery, u.Fragment, u.RawFragment}
	if q, err := url.QueryUnescape(u.RawQuery); err == nil {
		parts = append(parts, q)
	}
	if u.User != nil {
		parts = append(parts, u.User.String())
		if p, ok := u.User.Password(); ok {
			parts = append(parts, p, url.QueryEscape(p), url.PathEscape(p))
		}
	}
	// The escaped path's segments too: a token holding an escaped slash is one segment there.
	for seg := range strings.SplitSeq(u.Path+"/"+u.EscapedPath(), "/") {
		if len(seg) >= tokenLen {
			parts = append(parts, seg, url.PathEscape(seg))
		}
	}
	for _, vs := range u.Query() {
		for _, v := range vs {
			if len(v) >= tokenLen {
				parts = append(parts, v, url.QueryEscape(v))
			}
		}
	}
	var out []string
	for _, p := range parts {
		if len(p) > 1 && !slices.Contains(out, p) { // "/" is no secret
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// Redacted is s with every one of parts (longest first, as Parts gives them) replaced.
func Redacted(s string, parts []string) string {
	for _, p := range parts {
		s = strings.ReplaceAll(s, p, "[redacted]")
	}
	return s
}

// Snippet reads at most n bytes' worth of r for an error message, with parts cut out. It reads
// more than n, room for the longest part to be seen whole where it starts within n. Where the
// read stopped short of the answer's end (its limit, or an error such as a timeout), the text
// after the last part cut out that is the beginning of a part is cut too: its beginning is as
// secret as the rest, and the redactions before it may bring it within n. The snippet is valid
// UTF-8 and trimmed.
func Snippet(r io.Reader, n int, parts []string) string {
	room := 0
	if len(parts) > 0 {
		room = len(parts[0])
	}
	b, err := io.ReadAll(io.LimitReader(r, int64(n+room)))
	// Made valid before the parts are cut out, not after: a byte dropped from within a part
	// would otherwise join it again once the part had been looked for.
	s := Redacted(strings.ToValidUTF8(string(b), ""), parts)
	if len(b) == n+room || err != nil {
		s = cutPartialTail(s, parts)
	}
	if len(s) > n {
		s = s[:n]
	}
	return strings.TrimSpace(strings.ToValidUTF8(s, "")) // a rune cut at n
}

// cutPartialTail cuts from s (redacted already, so its whole parts are gone) the longest ending
// that is the beginning of one of parts.
func cutPartialTail(s string, parts []string) string {
	longest := 0
	for _, p := range parts {
		for k := min(len(p)-1, len(s)); k > longest; k-- {
			if strings.HasSuffix(s, p[:k]) {
				longest = k
				break
			}
		}
	}
	return s[:len(s)-longest]
}
