package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/stack"
)

// runToken mints a token for local use: `handoff token -role customer -subject alice`.
// It signs with HANDOFF_JWT_KEYS, or the development key of the one-process mode's data dir.
func runToken(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("handoff token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	role := fs.String("role", "customer", "customer | staff | admin")
	subject := fs.String("subject", "", "customer id, staff id or admin name (required)")
	stores := fs.String("stores", "", "comma-separated store ids a staff token acts for")
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the token is valid")
	dataDir := fs.String("data-dir", or(getenv("HANDOFF_DATA_DIR"), ".data"), "data dir holding the development key")
	// Not defaulted to HANDOFF_JWT_KEYS here: the usage text prints defaults, and keys are secret.
	keys := fs.String("jwt-keys", "", "key set kid:base64key[,...] (default: HANDOFF_JWT_KEYS, else the development key)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: handoff token -role customer|staff|admin -subject ID [-stores a,b] [-ttl 24h]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return 0
	} else if err != nil {
		return 2
	}
	if *keys == "" {
		*keys = getenv("HANDOFF_JWT_KEYS")
	}
	p := auth.Principal{Subject: *subject, Role: auth.Role(*role)}
	for _, s := range strings.Split(*stores, ",") {
		if s = strings.TrimSpace(s); s != "" {
			p.Stores = append(p.Stores, s)
		}
	}
	if p.Subject == "" {
		fmt.Fprintln(stderr, "handoff token: -subject is required")
		return 2
	}
	if *ttl <= 0 {
		fmt.Fprintf(stderr, "handoff token: -ttl %s: want a positive duration such as 24h\n", *ttl)
		return 2
	}
	ks, err := stack.ClientKeys(*keys, *dataDir)
	if err != nil {
		fmt.Fprintf(stderr, "handoff token: %v (run it where Handoff runs, or pass its -data-dir or -jwt-keys)\n", err)
		return 1
	}
	tok, err := ks.Issue(p, *ttl)
	if err != nil {
		fmt.Fprintf(stderr, "handoff token: %v\n", err)
		return 2
	}
	fmt.Fprintln(stdout, tok)
	return 0
}

func or(s, def string) string {
	if s != "" {
		return s
	}
	return def
}
