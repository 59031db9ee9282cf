// Package storeid is the one rule for what a store id may be: inventory makes stores with it,
// and every other part refuses, naming the field, an id that no store can have.
package storeid

import "regexp"

// pattern: ids appear in URLs and as a token of NATS subjects (handoff.store.<id>.ticket.*).
var pattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// Rule says what Valid takes, for refusals.
const Rule = "1-64 of a-z, 0-9, '-', '_', starting with a letter or digit"

// Valid reports whether id is one a store can have.
func Valid(id string) bool { return pattern.MatchString(id) }
