package gateway_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/gateway"
	"github.com/handoff-dev/handoff/proto/handoff/catalog/v1/catalogv1connect"
)

// A call is admitted, and charged to its caller's rate, when its headers are in, not once its
// body has come: otherwise a client sending bodies a byte at a time holds, uncharged, a
// connection and a goroutine per call for as long as the edge waits for a body. Here, of four
// calls whose bodies never come, the two past their address's burst are refused at once.
func TestACallIsChargedBeforeItsBodyArrives(t *testing.T) {
	g := gatewayTo(t, "127.0.0.1:1", time.Second, func(c *gateway.Config) {
		c.RateLimits = gateway.RateLimits{PerCaller: 1, PerCallerBurst: 1, PerAddress: 0.01, PerAddressBurst: 2, Checkout: 1, CheckoutBurst: 1}
	})
	var (
		mu       sync.Mutex
		refused  int
		answered []string
		wg       sync.WaitGroup
	)
	for range 4 {
		conn, err := net.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// Headers, and a body announced that never comes.
		if _, err := io.WriteString(conn, "POST "+catalogv1connect.CatalogServiceListCategoriesProcedure+" HTTP/1.1\r\nHost: gw\r\n"+
			"Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nContent-Length: 100\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			// The two admitted wait for their bodies (the edge's body timeout is 30 s).
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			res, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				return
			}
			_ = res.Body.Close()
			mu.Lock()
			defer mu.Unlock()
			answered = append(answered, res.Header.Get("Grpc-Status"))
			if res.Header.Get("Grpc-Status") == "8" {
				refused++
			}
		})
	}
	wg.Wait()
	if refused != 2 || len(answered) != 2 {
		t.Fatalf("4 calls without their bodies, over a burst of 2: answered with grpc-status %v; want two refused (8) at once", answered)
	}
}
