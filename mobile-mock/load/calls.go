package load

import (
	"context"
	"maps"
	"path"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
)

// callTimes times every unary call by RPC name, so a slow run shows which step is slow.
type callTimes struct{ byRPC sync.Map } // RPC name -> *Histogram

func (c *callTimes) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		began := time.Now()
		res, err := next(ctx, req)
		if err == nil {
			h, _ := c.byRPC.LoadOrStore(path.Base(req.Spec().Procedure), &Histogram{})
			h.(*Histogram).Record(time.Since(began))
		}
		return res, err
	}
}

func (c *callTimes) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (c *callTimes) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

func (c *callTimes) reset() { c.byRPC.Clear() }

// stats returns each RPC's latencies (successful calls).
func (c *callTimes) stats() map[string]Stats {
	out := map[string]Stats{}
	c.byRPC.Range(func(k, v any) bool {
		out[k.(string)] = v.(*Histogram).Stats()
		return true
	})
	return out
}

// rpcOrder lists RPC names in the order an order meets them, then any others.
func rpcOrder(m map[string]Stats) []string {
	journey := []string{"CreateCart", "AddLine", "SetPickup", "Checkout", "AcceptOrder", "MarkReady", "AckTicket", "HandOver"}
	var out []string
	for _, n := range journey {
		if _, ok := m[n]; ok {
			out = append(out, n)
		}
	}
	for _, n := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(journey, n) {
			out = append(out, n)
		}
	}
	return out
}
