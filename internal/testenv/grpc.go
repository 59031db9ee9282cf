package testenv

import (
	"net"
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
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: listen: %v", err)
	}
	defer lis.Close()
	return lis.Addr().String()
}
