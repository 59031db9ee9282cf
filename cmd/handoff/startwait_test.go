package main

import (
	"io"
	"net"
	"net/url"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/handoff-dev/handoff/internal/testenv"
)

// Parts started together come up in no set order: a part whose NATS and PostgreSQL answer
// only a moment after it starts waits for them, instead of exiting.
func TestAPartStartedBeforeNATSAndPostgresWaitsForThem(t *testing.T) {
	bin := buildBinary(t)
	natsAddr, pgAddr, catalogAddr := testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t)
	db, err := url.Parse(testenv.FreshDatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	realPG := db.Host
	db.Host = pgAddr // through a forwarder that starts late

	_, natsPort, _ := net.SplitHostPort(natsAddr)
	opts := &server.Options{Host: "127.0.0.1", JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true}
	if opts.Port, err = strconv.Atoi(natsPort); err != nil {
		t.Fatal(err)
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	// NATS answers after a second, PostgreSQL after four: the part waits for each in turn.
	go func() {
		time.Sleep(time.Second)
		ns.Start()
	}()
	late := make(chan net.Listener, 1)
	go func() {
		time.Sleep(4 * time.Second)
		lis, err := net.Listen("tcp", pgAddr)
		if err != nil {
			close(late)
			return
		}
		late <- lis
		forward(lis, realPG)
	}()
	t.Cleanup(func() {
		if lis, ok := <-late; ok {
			lis.Close()
		}
	})

	began := time.Now()
	p := startTarget(t, bin, []string{"-target", "catalog", "-metrics-addr", "127.0.0.1:0", "-data-dir", t.TempDir()},
		"NATS_URL=nats://"+natsAddr, "CATALOG_DATABASE_URL="+db.String(), "DATABASE_URL=",
		"HANDOFF_CATALOG_ADDR="+catalogAddr, "HANDOFF_JWT_KEYS="+testKeys)
	if took := time.Since(began); took < 4*time.Second {
		t.Errorf("ready %s after the start, before PostgreSQL could answer", took)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.waitExit(t); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}

// forward copies each connection lis takes to and from to, until lis is closed.
func forward(lis net.Listener, to string) {
	for {
		in, err := lis.Accept()
		if err != nil {
			return
		}
		go func() {
			defer in.Close()
			out, err := net.Dial("tcp", to)
			if err != nil {
				return
			}
			defer out.Close()
			go func() { _, _ = io.Copy(out, in) }()
			_, _ = io.Copy(in, out)
		}()
	}
}
