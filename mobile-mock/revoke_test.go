package main

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/handoff-dev/handoff/internal/stack"
	"github.com/handoff-dev/handoff/mobile-mock/shopper"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
	"github.com/handoff-dev/handoff/proto/handoff/pos/v1/posv1connect"
)

// liveMockTerminals counts the terminals mobile-mock registered that are not revoked, as the
// pos-adapter lists them.
func liveMockTerminals(t *testing.T, ready stack.Ready, flags []string) int {
	t.Helper()
	admin := posv1connect.NewTerminalAdminServiceClient(http.DefaultClient, "http://"+ready.POSAdapterAddr, connect.WithGRPCWeb(), connect.WithInterceptors(shopper.Bearer(adminToken(t, flags))))
	live := 0
	for page := ""; ; {
		res, err := admin.ListTerminals(t.Context(), connect.NewRequest(&posv1.ListTerminalsRequest{PageSize: 1000, PageToken: page}))
		if err != nil {
			t.Fatal(err)
		}
		for _, term := range res.Msg.GetTerminals() {
			if strings.HasPrefix(term.GetName(), "mobile-mock") {
				live++
			}
		}
		if page = res.Msg.GetNextPageToken(); page == "" {
			return live
		}
	}
}

// A run ended by a first Ctrl-C (its context cancelled) still revokes its terminals: the
// revocations run on a context of their own.
func TestTerminalsOfAnInterruptedLoadAreRevoked(t *testing.T) {
	ready, flags := startHandoff(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stdout, stderr bytes.Buffer
	args := []string{"load", "-basket", "-shoppers", "2", "-duration", "5m", "-inventory", ready.ServiceAddrs[stack.TargetInventory]}
	done := make(chan int, 1)
	go func() { done <- run(ctx, append(args, flags...), noEnv, &stdout, &stderr) }()
	// Interrupted once the run is under way (its terminals registered).
	deadline := time.Now().Add(2 * time.Minute)
	for liveMockTerminals(t, ready, flags) == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	cancel()
	select {
	case code := <-done:
		t.Logf("exit %d\n%s%s", code, stdout.String(), stderr.String())
	case <-time.After(2 * time.Minute):
		t.Fatal("the interrupted load did not end within 2 minutes")
	}
	if n := liveMockTerminals(t, ready, flags); n != 0 {
		t.Errorf("%d mobile-mock terminals still live after the interrupted load ended", n)
	}
}
