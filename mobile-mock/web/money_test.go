package web_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/handoff-dev/handoff/internal/money"
)

// The browser page shows amounts as the shopper emails and the command-line app do, in each
// currency's own minor unit: its money() (money.ts, bundled by the page's esbuild, run by
// Node) against money.Format, for every currency whose minor unit is not a hundredth and two
// that are. It showed every amount as hundredths: 1.500 KWD as "15.00 KWD".
func TestThePageShowsAmountsAsTheEmailsDo(t *testing.T) {
	node := findNode(t)
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	ensureNodeModules(t, dir, node)
	esbuild := exec.CommandContext(t.Context(), filepath.Join(dir, "node_modules", ".bin", "esbuild"), "money.ts", "--bundle", "--format=iife", "--global-name=page", "--log-level=warning")
	esbuild.Env = withNode(node)
	js, err := esbuild.Output()
	if err != nil {
		t.Fatalf("esbuild money.ts: %v", err)
	}
	currencies := append(slices.Sorted(func(yield func(string) bool) {
		for c := range money.NotHundredths() {
			if !yield(c) {
				return
			}
		}
	}), "USD", "EUR")
	type example struct {
		minor    int64
		currency string
	}
	var cases []example
	for _, c := range currencies {
		for _, minor := range []int64{0, 7, 1500, -1500, money.MaxAmountMinor} {
			cases = append(cases, example{minor, c})
		}
	}
	script := string(js)
	for _, c := range cases {
		script += "\nconsole.log(page.money({amountMinor: " + strconv.FormatInt(c.minor, 10) + "n, currencyCode: '" + c.currency + "'}));"
	}
	out, err := exec.CommandContext(t.Context(), node, "-e", script).CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	got := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(got) != len(cases) {
		t.Fatalf("node printed %d lines for %d amounts:\n%s", len(got), len(cases), out)
	}
	for i, c := range cases {
		if want := money.Format(c.minor, c.currency); got[i] != want {
			t.Errorf("the page shows %d minor units of %s as %q; the emails as %q", c.minor, c.currency, got[i], want)
		}
	}
}
