package main

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/handoff-dev/handoff/internal/testenv"
)

// The deploy files run the parts with HANDOFF_STREAM_REPLICAS=3 against a three-node NATS
// cluster started beside them (compose: all at once; Kubernetes: a rollout). A part started
// while the cluster has not yet formed (one node up, the other two a few seconds behind, so
// JetStream has no meta leader yet) waits within -start-wait, as it waits for a NATS or
// PostgreSQL that does not answer yet; it exited at once before.
func TestAPartWaitsForAJetStreamClusterStillForming(t *testing.T) {
	// 3s: two nodes a little behind; 0s: all three nodes and the part started at once, as
	// docker compose up does.
	for _, lag := range []time.Duration{3 * time.Second, 0} {
		t.Run("others_after_"+lag.String(), func(t *testing.T) { partWithFormingCluster(t, lag) })
	}
}

// partWithFormingCluster starts a catalog part on a three-node cluster whose second and third
// nodes start lag after the first (negative: the cluster formed before the part starts), and
// fails t unless the part comes up and stops cleanly.
func partWithFormingCluster(t *testing.T, lag time.Duration) {
	bin := buildBinary(t)
	clientAddr := []string{testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t)}
	routeAddr := []string{testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t)}
	port := func(addr string) int {
		_, p, _ := strings.Cut(addr, ":")
		n, _ := strconv.Atoi(p)
		return n
	}
	nodes := make([]*server.Server, 3)
	for i := range nodes {
		var routes []string
		for j := range routeAddr {
			if j != i {
				routes = append(routes, "nats://"+routeAddr[j])
			}
		}
		o := &server.Options{
			ServerName: fmt.Sprintf("nats-%d", i+1), Host: "127.0.0.1", Port: port(clientAddr[i]),
			JetStream: true, StoreDir: t.TempDir(), SyncAlways: true, NoSigs: true, NoLog: true,
			Cluster: server.ClusterOpts{Name: "handoff", Host: "127.0.0.1", Port: port(routeAddr[i])},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
		}
		ns, err := server.NewServer(o)
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = ns
		t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	}
	// nats-1 is up at once; nats-2 and nats-3 (slower containers, pods scheduled later) follow
	// three seconds after the part starts: well within the part's one-minute start wait.
	nodes[0].Start()
	if !nodes[0].ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-1 did not start")
	}
	if lag < 0 {
		nodes[1].Start()
		nodes[2].Start()
		deadline := time.Now().Add(60 * time.Second)
		for !nodes[0].JetStreamIsCurrent() || nodes[0].JetStreamIsLeader() == false && nodes[1].JetStreamIsLeader() == false && nodes[2].JetStreamIsLeader() == false {
			if time.Now().After(deadline) {
				t.Fatal("the cluster elected no meta leader within 60s")
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("cluster formed")
	} else {
		go func() {
			time.Sleep(lag)
			nodes[1].Start()
			nodes[2].Start()
		}()
	}

	var urls []string
	for _, a := range clientAddr {
		urls = append(urls, "nats://"+a)
	}
	p := startTarget(t, bin, []string{"-target", "catalog", "-metrics-addr", "127.0.0.1:0", "-catalog-addr", testenv.FreeAddr(t)},
		"NATS_URL="+strings.Join(urls, ","), "HANDOFF_STREAM_REPLICAS=3",
		"CATALOG_DATABASE_URL="+testenv.FreshDatabaseURL(t), "DATABASE_URL=",
		"HANDOFF_JWT_KEYS="+testKeys)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.waitExit(t); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}
