package edge

import (
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A backend the gateway cannot reach is Unavailable to its caller, without the gRPC client's
// own words, which name internal addresses; a service's own Unavailable keeps its message.
func TestABackendsTransportFailureIsUnavailableWithoutItsAddress(t *testing.T) {
	down := status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 10.0.3.7:9101: connect: connection refused"`)
	err := ConnectError(down)
	if connect.CodeOf(err) != connect.CodeUnavailable || strings.Contains(err.Error(), "10.0.3.7") || strings.Contains(err.Error(), "dial") {
		t.Errorf("a backend that is down reached the caller as %v", err)
	}
	// A service's NATS client failing names internal subjects and NATS's own errors.
	for _, c := range []struct {
		err  error
		code connect.Code
	}{
		{status.Error(codes.Unavailable, "natsrpc: no service answers handoff.svc.fulfilment.PlaceOrder"), connect.CodeUnavailable},
		{status.Error(codes.Unavailable, "natsrpc: handoff.svc.inventory.Reserve: nats: connection closed"), connect.CodeUnavailable},
		{status.Error(codes.DeadlineExceeded, "natsrpc: handoff.svc.inventory.Reserve: no answer before the deadline"), connect.CodeDeadlineExceeded},
		{status.Error(codes.Internal, "natsrpc: handoff.svc.catalog.Prices: malformed handoff.catalog.v1.PricesResponse response: proto: cannot parse"), connect.CodeInternal},
	} {
		err := ConnectError(c.err)
		if connect.CodeOf(err) != c.code || strings.Contains(err.Error(), "handoff.") || strings.Contains(err.Error(), "nats") {
			t.Errorf("%v reached the caller as %v", c.err, err)
		}
	}
	own := status.Error(codes.Unavailable, "the order could not be confirmed in time; retry with the same idempotency_key (DeadlineExceeded)")
	if err := ConnectError(own); connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "same idempotency_key") {
		t.Errorf("a service's own Unavailable reached the caller as %v", err)
	}
}
