// Package terminal plays a store's POS terminal against the pos-adapter: it is registered with
// an admin token (TerminalAdminService), follows the store's live ticket feed and does what
// staff do to an order (accept, mark ready, hand over against the shopper's pickup code), all
// with the terminal's own credential.
package terminal

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/handoff-dev/handoff/mobile-mock/shopper"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
	"github.com/handoff-dev/handoff/proto/handoff/pos/v1/posv1connect"
)

// Admin registers terminals: TerminalAdminService with an admin token.
type Admin struct {
	client     posv1connect.TerminalAdminServiceClient
	httpClient *http.Client
	posURL     string
	opts       []connect.ClientOption
}

// NewAdmin connects to the pos-adapter at posURL ("http://127.0.0.1:8090") over gRPC-web with
// an admin token. opts add to the options of its client and of the terminals it registers.
func NewAdmin(httpClient *http.Client, posURL, adminToken string, opts ...connect.ClientOption) *Admin {
	return &Admin{
		client: posv1connect.NewTerminalAdminServiceClient(httpClient, posURL,
			append([]connect.ClientOption{connect.WithGRPCWeb(), connect.WithInterceptors(shopper.Bearer(adminToken))}, opts...)...),
		httpClient: httpClient,
		posURL:     posURL,
		opts:       opts,
	}
}

// Register creates a terminal named name for one store and returns it, connected with the
// credential RegisterTerminal shows once.
func (a *Admin) Register(ctx context.Context, storeID, name string) (*Terminal, error) {
	res, err := a.client.RegisterTerminal(ctx, connect.NewRequest(&posv1.RegisterTerminalRequest{Name: name, StoreIds: []string{storeID}}))
	if err != nil {
		return nil, fmt.Errorf("register a terminal for store %s: %w", storeID, err)
	}
	return &Terminal{
		StoreID: storeID,
		ID:      res.Msg.GetTerminal().GetId(),
		client: posv1connect.NewTerminalServiceClient(a.httpClient, a.posURL,
			append([]connect.ClientOption{connect.WithGRPCWeb(), connect.WithInterceptors(shopper.Bearer(res.Msg.GetCredential()))}, a.opts...)...),
	}, nil
}

// Revoke revokes a terminal this admin registered: its credential stops working at once, so a
// run that is over leaves no live terminal behind in the store's list.
func (a *Admin) Revoke(ctx context.Context, terminalID string) error {
	if _, err := a.client.RevokeTerminal(ctx, connect.NewRequest(&posv1.RevokeTerminalRequest{TerminalId: terminalID})); err != nil {
		return fmt.Errorf("revoke terminal %s: %w", terminalID, err)
	}
	return nil
}

// Terminal is one registered terminal of one store.
type Terminal struct {
	StoreID string
	ID      string
	client  posv1connect.TerminalServiceClient
}

// Follow receives the store's tickets and calls handle for each, in feed order, until ctx
// ends. The feed is resumable (every ticket this terminal has not acknowledged is sent again on
// reconnect), so a broken stream is reopened after a short pause rather than reported.
// connected is called each time a stream is opened; broken, with the error of each stream that
// could not be opened or broke, before it is reopened (a feed down for good would otherwise go
// unseen: the retries are silent). Either may be nil. Follow returns ctx's error, or the error
// of a stream that was refused outright (bad credential, wrong store).
func (t *Terminal) Follow(ctx context.Context, connected func(), broken func(error), handle func(*posv1.Ticket)) error {
	backoff := 50 * time.Millisecond
	for {
		stream, err := t.client.StreamTickets(ctx, connect.NewRequest(&posv1.StreamTicketsRequest{StoreId: t.StoreID}))
		if err == nil {
			if connected != nil {
				connected()
			}
			for stream.Receive() {
				backoff = 50 * time.Millisecond
				handle(stream.Msg().GetTicket())
			}
			err = stream.Err()
			_ = stream.Close()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch connect.CodeOf(err) {
		case connect.CodeUnauthenticated, connect.CodePermissionDenied, connect.CodeInvalidArgument, connect.CodeNotFound:
			return fmt.Errorf("ticket feed of store %s: %w", t.StoreID, err)
		}
		if err != nil && broken != nil {
			broken(err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// Ack records that this terminal has handled a ticket, so the feed does not send it again.
func (t *Terminal) Ack(ctx context.Context, ticketID string) error {
	_, err := t.client.AckTicket(ctx, connect.NewRequest(&posv1.AckTicketRequest{StoreId: t.StoreID, TicketId: ticketID}))
	return err
}

// Accept starts preparing an order: CONFIRMED -> PREPARING.
func (t *Terminal) Accept(ctx context.Context, orderID string) (*fulfilmentv1.Order, error) {
	res, err := t.client.AcceptOrder(ctx, connect.NewRequest(&posv1.AcceptOrderRequest{StoreId: t.StoreID, OrderId: orderID}))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetOrder(), nil
}

// MarkReady tells the shopper the order is ready: PREPARING -> READY.
func (t *Terminal) MarkReady(ctx context.Context, orderID string) (*fulfilmentv1.Order, error) {
	res, err := t.client.MarkReady(ctx, connect.NewRequest(&posv1.MarkReadyRequest{StoreId: t.StoreID, OrderId: orderID}))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetOrder(), nil
}

// HandOver completes the order against the code the shopper shows: READY -> COLLECTED.
func (t *Terminal) HandOver(ctx context.Context, orderID, pickupCode string) (*fulfilmentv1.Order, error) {
	res, err := t.client.HandOver(ctx, connect.NewRequest(&posv1.HandOverRequest{StoreId: t.StoreID, OrderId: orderID, PickupCode: pickupCode}))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetOrder(), nil
}
