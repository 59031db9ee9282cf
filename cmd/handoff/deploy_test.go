package main

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/handoff-dev/handoff/internal/stack"
	"github.com/handoff-dev/handoff/internal/testenv"
)

// The deploy files are kept in step with the binary: every variable they set is one it reads,
// every flag they pass is one it has, and every split part gets what it cannot start without.
func TestDeployFilesUseTheBinarysVariablesAndFlags(t *testing.T) {
	known := map[string]bool{}
	for _, v := range envVar {
		known[v] = true
	}
	for _, v := range serviceDatabaseEnv {
		known[v] = true
	}
	// Read by deploy/nats-server.conf, for the NATS nodes (deployNATS checks it is).
	known["HANDOFF_NATS_PASSWORD"] = true
	flags := map[string]bool{"help": true}
	for f := range envVar {
		flags[f] = true
	}
	variable := regexp.MustCompile(`(?m)^\s+((?:HANDOFF_|NATS_|[A-Z]+_?DATABASE_)[A-Z_]*|DATABASE_URL):`)
	flag := regexp.MustCompile(`"-([a-z][a-z-]*)"`)
	for _, file := range []string{"../../deploy/docker-compose.yml", "../../deploy/k8s/handoff.yaml"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var set []string
		for _, m := range variable.FindAllStringSubmatch(string(b), -1) {
			set = append(set, m[1])
			if !known[m[1]] {
				t.Errorf("%s sets %s, which handoff does not read", file, m[1])
			}
		}
		for _, need := range []string{"DATABASE_URL", "NATS_URL", "HANDOFF_JWT_KEYS", "HANDOFF_PICKUP_CODE_SECRET"} {
			if !slices.Contains(set, need) {
				t.Errorf("%s does not set %s, without which the split parts do not start", file, need)
			}
		}
		for _, target := range stack.Targets {
			// Every part runs: a file that leaves one out starts a system whose edges dial nothing.
			if target != stack.TargetAll && !strings.Contains(string(b), `"-target", "`+target+`"`) {
				t.Errorf("%s does not run the %s target", file, target)
			}
		}
		for _, m := range flag.FindAllStringSubmatch(string(b), -1) {
			// -c is nats-server's (its config file), in the compose file.
			if !flags[m[1]] && m[1] != "c" {
				t.Errorf("%s passes -%s, which handoff does not have", file, m[1])
			}
		}
	}
}

// Kubernetes and compose wait longer than a stop can take before they kill a process: the
// drain's grace (the deploy files' or the default), the outbox's last flush, then closing
// (stack.MaxShutdown). A kill midway loses nothing, but cuts off the requests being finished.
func TestDeployFilesWaitForAWholeShutdown(t *testing.T) {
	graceSetting := regexp.MustCompile(`(?m)^\s+HANDOFF_SHUTDOWN_GRACE:\s*"?([^"\s]+)"?`)
	drainSetting := regexp.MustCompile(`(?m)HANDOFF_DRAIN_DELAY\W+(?:value:\s*)?"?([0-9][^"\s]*)"?`)
	waits := map[string]*regexp.Regexp{
		"../../deploy/k8s/handoff.yaml":   regexp.MustCompile(`terminationGracePeriodSeconds:\s*(\d+)()`),
		"../../deploy/docker-compose.yml": regexp.MustCompile(`stop_grace_period:\s*(\d+)(s|m)`),
	}
	for file, wait := range waits {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		env := map[string]string{}
		if m := graceSetting.FindSubmatch(b); m != nil {
			env["HANDOFF_SHUTDOWN_GRACE"] = string(m[1])
		}
		set, err := parseSettings(nil, func(k string) string { return env[k] }, io.Discard)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		// Every wait must cover the longest drain delay any part of the file is given.
		var drain time.Duration
		for _, m := range drainSetting.FindAllSubmatch(b, -1) {
			d, err := time.ParseDuration(string(m[1]))
			if err != nil {
				t.Fatalf("%s: HANDOFF_DRAIN_DELAY %q: %v", file, m[1], err)
			}
			drain = max(drain, d)
		}
		need := stack.MaxShutdown(set.stack.ShutdownGrace, drain)
		found := wait.FindAllSubmatch(b, -1)
		if len(found) == 0 {
			t.Errorf("%s does not say how long to wait for a stop (%s needed)", file, need)
		}
		for _, m := range found {
			n, _ := strconv.Atoi(string(m[1]))
			d := time.Duration(n) * time.Second
			if string(m[2]) == "m" {
				d = time.Duration(n) * time.Minute
			}
			if d < need {
				t.Errorf("%s kills a stopping process after %s; a stop with a %s grace may take %s", file, d, set.stack.ShutdownGrace, need)
			}
		}
	}
}

// Metrics are switched off by off, from a flag or the environment alike: an empty variable
// means the default, as for every setting, so the environment could not switch them off.
func TestMetricsAreSwitchedOffByOffFromTheEnvironmentToo(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, map[string]string{"HANDOFF_METRICS_ADDR": "off"}, ""},
		{[]string{"-metrics-addr", "off"}, nil, ""},
		{[]string{"-metrics-addr", ""}, nil, ""},
		{nil, map[string]string{"HANDOFF_METRICS_ADDR": ""}, "127.0.0.1:9090"},
		{nil, map[string]string{"HANDOFF_METRICS_ADDR": "0.0.0.0:9464"}, "0.0.0.0:9464"},
	} {
		set, err := parseSettings(tc.args, func(k string) string { return tc.env[k] }, io.Discard)
		if err != nil {
			t.Fatalf("%v %v: %v", tc.args, tc.env, err)
		}
		if set.stack.MetricsAddr != tc.want {
			t.Errorf("%v %v: metrics address %q, want %q", tc.args, tc.env, set.stack.MetricsAddr, tc.want)
		}
	}
}

// deployNATS starts a NATS server as deploy/nats-server.conf configures one (its clients'
// authorization, syncs and payload limit; one node, on a free port) and gives the NATS_URL a
// Handoff process connects to it with. It checks that the server refuses a client without the
// password, the one way in for anything that could otherwise reserve or release stock.
func deployNATS(t *testing.T) string {
	t.Helper()
	var b [16]byte
	_, _ = rand.Read(b[:])
	password := hex.EncodeToString(b[:])
	t.Setenv("HANDOFF_NATS_PASSWORD", password) // the file reads it from the environment
	dep, err := server.ProcessConfigFile("../../deploy/nats-server.conf")
	if err != nil {
		t.Fatalf("deploy/nats-server.conf: %v", err)
	}
	if dep.Username != "handoff" || dep.Password != password {
		t.Fatalf("deploy/nats-server.conf lets clients in as %q with a password that is not HANDOFF_NATS_PASSWORD's; want the user handoff with it", dep.Username)
	}
	if dep.Cluster.Username == "" || dep.Cluster.Password != password {
		t.Errorf("deploy/nats-server.conf's routes take no password, or not HANDOFF_NATS_PASSWORD's")
	}
	if !dep.SyncAlways {
		t.Errorf("deploy/nats-server.conf does not sync before acknowledging (sync_interval: always)")
	}
	// A frozen copy of a service keeps its share of the queue groups' requests until the server
	// cuts it off: within half a minute, not the default's minutes.
	if cutOff := dep.PingInterval * time.Duration(dep.MaxPingsOut+1); dep.PingInterval <= 0 || cutOff > 30*time.Second {
		t.Errorf("deploy/nats-server.conf cuts off a client that stopped answering after up to %s (ping_interval %s, ping_max %d); want 30s at most", cutOff, dep.PingInterval, dep.MaxPingsOut)
	}
	ns := testenv.NATS(t, func(o *server.Options) {
		o.Username, o.Password, o.SyncAlways, o.MaxPayload = dep.Username, dep.Password, dep.SyncAlways, dep.MaxPayload
		o.PingInterval, o.MaxPingsOut = dep.PingInterval, dep.MaxPingsOut
	})
	if nc, err := nats.Connect(ns.ClientURL()); err == nil {
		nc.Close()
		t.Fatal("the NATS server configured as deploy/nats-server.conf says took a client without credentials")
	}
	return strings.Replace(ns.ClientURL(), "nats://", "nats://handoff:"+password+"@", 1)
}
