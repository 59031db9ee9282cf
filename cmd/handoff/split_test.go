package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/stack"
	"github.com/handoff-dev/handoff/internal/testenv"
)

// The gateway reaches the services over gRPC only: it starts with its own settings, without
// NATS_URL, and with a NATS named but down. Before, it refused to start without NATS_URL, and
// with NATS down waited for it and exited.
func TestTheGatewayTargetStartsWithoutNATS(t *testing.T) {
	env := map[string]string{"HANDOFF_TARGET": "gateway", "HANDOFF_JWT_KEYS": testKeys}
	var stderr bytes.Buffer
	if _, err := parseSettings(nil, func(k string) string { return env[k] }, &stderr); err != nil {
		t.Errorf("gateway with its key set and the services' addresses: %v; want it accepted (it uses no NATS)", err)
	}
	env["NATS_URL"] = "nats://" + testenv.FreeAddr(t)
	s, err := parseSettings(nil, func(k string) string { return env[k] }, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	s.stack.GatewayAddr, s.stack.MetricsAddr = "127.0.0.1:0", ""
	s.stack.StartWait = time.Second
	s.stack.Logger = testenv.Logger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ready := make(chan stack.Ready, 1)
	errc := make(chan error, 1)
	go func() { errc <- stack.Run(ctx, s.stack, func(r stack.Ready) { ready <- r }) }()
	select {
	case r := <-ready:
		if line := readyMessage("gateway", r); strings.Contains(line, "NATS") {
			t.Errorf("the gateway's ready line names a NATS it does not use: %s", line)
		}
	case err := <-errc:
		t.Fatalf("gateway with NATS down (which it does not use): %v", err)
	}
	cancel()
	<-errc
}

// Ports and addresses out of range are refused as configuration, naming the setting. Before,
// -postgres-port 70000 ran initdb and failed with PostgreSQL's own complaint, and a bad embedded
// NATS port was taken for another Handoff running.
func TestOutOfRangePortsAreRefusedNamingTheSetting(t *testing.T) {
	for _, args := range [][]string{
		{"-postgres-port", "70000"},
		{"-postgres-port", "-1"},
		{"-embedded-nats-addr", "127.0.0.1:99999"},
		{"-gateway-addr", "8080"},
		{"-metrics-addr", "127.0.0.1:x"},
	} {
		var stderr bytes.Buffer
		_, err := parseSettings(args, func(string) string { return "" }, &stderr)
		if err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("%v: %v; want a configuration error naming %s", args, err, args[0])
		}
	}
	for _, args := range [][]string{{"-metrics-addr", "off"}, {"-metrics-addr", ""}, {"-postgres-port", "0"}} {
		var stderr bytes.Buffer
		if _, err := parseSettings(args, func(string) string { return "" }, &stderr); err != nil {
			t.Errorf("%v: %v; want it accepted", args, err)
		}
	}
}

// Service addresses the edges dial may be gRPC targets (dns:///name:port for a headless
// Service, unix:///path): they are not refused as host:port. The check added for ports first
// refused them.
func TestTheEdgesTakeGRPCTargetsForTheServices(t *testing.T) {
	for _, target := range []string{"dns:///handoff-catalog.handoff.svc.cluster.local:9101", "unix:///run/handoff/catalog.sock"} {
		env := map[string]string{"HANDOFF_TARGET": "gateway", "HANDOFF_JWT_KEYS": testKeys, "HANDOFF_CATALOG_ADDR": target}
		var stderr bytes.Buffer
		if _, err := parseSettings(nil, func(k string) string { return env[k] }, &stderr); err != nil {
			t.Errorf("gateway with catalog at gRPC target %q: %v; want it accepted", target, err)
		}
	}
}

// Only a service address an edge dials may be a gRPC target: an address to listen on given as a
// URL is still refused naming the setting.
func TestListenAddressesGivenAsURLsAreRefused(t *testing.T) {
	for _, tc := range []struct{ target, name, value string }{
		{"all", "HANDOFF_METRICS_ADDR", "http://0.0.0.0:9090"},
		{"all", "HANDOFF_GATEWAY_ADDR", "http://0.0.0.0:8080"},
		{"catalog", "HANDOFF_CATALOG_ADDR", "dns:///catalog:9101"},
	} {
		env := map[string]string{"HANDOFF_TARGET": tc.target, "HANDOFF_JWT_KEYS": testKeys, "NATS_URL": "nats://127.0.0.1:4222",
			"DATABASE_URL": "postgres://x@127.0.0.1/x", tc.name: tc.value}
		var stderr bytes.Buffer
		if _, err := parseSettings(nil, func(k string) string { return env[k] }, &stderr); err == nil || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("%s target with %s=%q: %v; want it refused naming %s", tc.target, tc.name, tc.value, err, tc.name)
		}
	}
}

// The SMTP TLS mode is one of starttls, require and implicit; anything else is refused naming
// the setting.
func TestTheSMTPTLSModeIsCheckedNamingTheSetting(t *testing.T) {
	for _, mode := range []string{"starttls", "require", "implicit"} {
		var stderr bytes.Buffer
		s, err := parseSettings([]string{"-smtp-tls", mode}, func(string) string { return "" }, &stderr)
		if err != nil || s.stack.Notify.SMTPTLS != mode {
			t.Errorf("-smtp-tls %s: %v (mode %q); want it taken", mode, err, s.stack.Notify.SMTPTLS)
		}
	}
	var stderr bytes.Buffer
	if _, err := parseSettings(nil, func(k string) string {
		if k == "HANDOFF_SMTP_TLS" {
			return "always"
		}
		return ""
	}, &stderr); err == nil || !strings.Contains(err.Error(), "HANDOFF_SMTP_TLS") {
		t.Errorf("HANDOFF_SMTP_TLS=always: %v; want it refused naming HANDOFF_SMTP_TLS", err)
	}
}
