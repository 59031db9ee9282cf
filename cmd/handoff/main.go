// Command handoff runs Handoff: by default the whole system in one process (embedded NATS, a
// private PostgreSQL, every service, the gateway and the pos-adapter, demo data loaded), or one
// part of it per process with -target. `handoff token` mints a token for local use.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	_ "time/tzdata" // store hours are computed in each store's zone, even on machines without tzdata

	"github.com/handoff-dev/handoff/internal/gcpolicy"
	"github.com/handoff-dev/handoff/internal/stack"
)

func main() {
	gcpolicy.Apply(os.Getenv)
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "token" {
		return runToken(args[1:], getenv, stdout, stderr)
	}
	s, err := parseSettings(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		// A bad configuration stops the process: carrying on would run something else than asked.
		fmt.Fprintf(stderr, "handoff: %v\n", err)
		return 2
	}
	opts := &slog.HandlerOptions{Level: s.logLevel}
	var handler slog.Handler = slog.NewTextHandler(stderr, opts)
	if s.logFormat == "json" {
		handler = slog.NewJSONHandler(stderr, opts)
	}
	logger := slog.New(handler)
	slog.SetDefault(logger)
	s.stack.Logger = logger

	// SIGINT/SIGTERM start a graceful stop; a second signal kills at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // restore default handling so a second Ctrl-C ends the process
	}()

	err = stack.Run(ctx, s.stack, func(r stack.Ready) { fmt.Fprintln(stdout, readyMessage(s.stack.Target, r)) })
	if err != nil {
		logger.Error("handoff stopped with an error", "err", err)
		return 1
	}
	return 0
}

// readyMessage is the one line a person (or a script) waits for: where each running part is.
func readyMessage(target string, r stack.Ready) string {
	var parts []string
	if r.GatewayAddr != "" {
		parts = append(parts, "gateway http://"+r.GatewayAddr+" (gRPC, gRPC-web, Connect)")
	}
	if r.POSAdapterAddr != "" {
		parts = append(parts, "pos-adapter http://"+r.POSAdapterAddr)
	}
	// The services' own gRPC ports carry the admin and staff APIs the gateway does not serve.
	var services []string
	for _, name := range stack.Targets {
		if addr := r.ServiceAddrs[name]; addr != "" {
			services = append(services, name+" "+addr)
		}
	}
	if len(services) > 0 {
		parts = append(parts, "gRPC (admin APIs) "+strings.Join(services, ", "))
	}
	if r.MetricsAddr != "" {
		parts = append(parts, "metrics http://"+r.MetricsAddr+"/metrics")
	}
	if r.NATSURL != "" { // the gateway alone uses none
		parts = append(parts, "NATS "+stack.RedactURL(r.NATSURL))
	}
	return "Handoff is ready (" + target + "): " + strings.Join(parts, " · ")
}
