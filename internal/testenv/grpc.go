package testenv

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// GRPC serves srv (services already registered) on a loopback port until t ends and returns a
// client connection to it: real gRPC over TCP, as the edges call the services.
func GRPC(t testing.TB, srv *grpc.Server) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: listen for gRPC: %v", err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("testenv: dial gRPC: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// FreeAddr is a loopback address nobody listens on now: a server that is down, or a port to
// start one on.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}

// FreePort is a loopback port nobody listens on now, below the range the kernel gives outgoing
// connections their ports from: one from that range (what listening on port 0 gives) can be
// taken by any connection made meanwhile, a test's or another package's, before the server
// that was to listen on it starts, which failed a start with "address already in use".
func FreePort(t testing.TB) int {
	t.Helper()
	low := ephemeralLow()
	for range 1000 {
		port := freePortFloor + rand.IntN(low-freePortFloor)
		lis, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // taken
		}
		lis.Close()
		return port
	}
	t.Fatalf("testenv: no free port in %d-%d", freePortFloor, low-1)
	return 0
}

// freePortFloor is the lowest port FreePort gives: above those services commonly listen on.
const freePortFloor = 20000

// ephemeralLow is the first port of the kernel's range for outgoing connections (Linux's
// ip_local_port_range; its default where it cannot be read).
func ephemeralLow() int {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > freePortFloor+1000 {
				low = n
			}
		}
	}
	return low
}
