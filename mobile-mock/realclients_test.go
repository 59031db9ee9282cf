package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/stacktest"
)

// repoRoot is the module root: tools live in its .tmp/bin.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// pinnedTool returns the path of a tool the Makefile pins into .tmp/bin.
func pinnedTool(t *testing.T, name string) string {
	t.Helper()
	path := filepath.Join(repoRoot(t), ".tmp", "bin", name)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is not installed in .tmp/bin: run `make tools` (make test does)", name)
	}
	return path
}

func runTool(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", filepath.Base(bin), strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// Off-the-shelf gRPC tools work against the gateway with nothing but its reflection: grpcurl
// over gRPC (HTTP/2 cleartext) and buf curl over gRPC-web, the browsers' protocol.
func TestGrpcurlAndBufCurlCallTheGatewayThroughReflection(t *testing.T) {
	ready := stacktest.Start(t)

	t.Run("grpcurl list", func(t *testing.T) {
		out := runTool(t, pinnedTool(t, "grpcurl"), "-plaintext", ready.GatewayAddr, "list")
		for _, svc := range []string{"handoff.catalog.v1.CatalogService", "handoff.inventory.v1.StoreLocatorService", "handoff.cart.v1.CartService", "handoff.fulfilment.v1.OrderService"} {
			if !strings.Contains(out, svc) {
				t.Errorf("grpcurl list does not show %s:\n%s", svc, out)
			}
		}
		for _, internal := range []string{"AdminService", "StoreOrderService", "TerminalService"} {
			if strings.Contains(out, internal) {
				t.Errorf("grpcurl list shows a non-public service (%s) on the shoppers' door:\n%s", internal, out)
			}
		}
	})

	t.Run("grpcurl describe and call", func(t *testing.T) {
		grpcurl := pinnedTool(t, "grpcurl")
		desc := runTool(t, grpcurl, "-plaintext", ready.GatewayAddr, "describe", "handoff.catalog.v1.ListProductsRequest")
		if !strings.Contains(desc, "page_size") {
			t.Errorf("describe ListProductsRequest lacks page_size:\n%s", desc)
		}
		out := runTool(t, grpcurl, "-plaintext", "-d", `{"query": "latte"}`, ready.GatewayAddr, "handoff.catalog.v1.CatalogService/ListProducts")
		if !strings.Contains(out, `"name": "Caffè Latte"`) || !strings.Contains(out, `"sku": "LATTE-16"`) {
			t.Errorf("ListProducts for latte does not list Caffè Latte / LATTE-16:\n%s", out)
		}
	})

	t.Run("buf curl over gRPC-web", func(t *testing.T) {
		out := runTool(t, pinnedTool(t, "buf"), "curl", "--protocol", "grpcweb", "--http2-prior-knowledge",
			"--data", `{"skus": ["LATTE-16"]}`, "http://"+ready.GatewayAddr+"/handoff.catalog.v1.CatalogService/BatchGetVariants")
		if !strings.Contains(out, `"sku": "LATTE-16"`) || !strings.Contains(out, `"productName": "Caffè Latte"`) {
			t.Errorf("buf curl BatchGetVariants LATTE-16:\n%s", out)
		}
	})
}
