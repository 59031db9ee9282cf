// Package posadapter is the door for store POS terminals and staff devices: the live ticket
// feed, staff actions on orders, store controls and vendor POS webhooks, over gRPC, gRPC-web
// and Connect on one port. It owns terminals, their credentials and acknowledgements, the
// store feeds (tickets), per-store feed settings and the vendor webhooks (schema pos).
//
// # Tickets
//
// A durable consumer (package inbox) reads fulfilment's OrderChanged events and turns each one a
// store must hear of into a Ticket: a confirmed order (NEW_ORDER), a cancellation, a line
// marked unavailable, a shopper's check-in, an expiry reminder, an escalation, a hand-over
// lock, an expiry. In the event's transaction the ticket gets the store's next sequence number
// (store_feeds, under its row lock), is stored (tickets) and is enqueued in the outbox as
// TicketRaised on handoff.store.<store_id>.ticket.<kind> with Nats-Msg-Id = ticket id. The
// ticket id is derived from the event id, so a redelivered event can never make a second
// ticket, and the escalation of an order has one id whichever timer raised it.
//
// The consumer reads only the events that raise a ticket, and preparing (which ends a store's
// own escalation timer); it handles the events waiting in batches, one transaction per batch
// with a few set-based statements (Config.ConsumerBatchSize, package inbox's batch mode), so
// under load a ticket waits for one commit, not for one commit per event queued ahead of it.
//
// # The feed (StreamTickets): Postgres replay, JetStream live
//
// What a terminal must get is "every ticket of its store it has not acknowledged, in order,
// then the live ones; nothing lost across adapter restarts; two terminals each get
// everything". The adapter does that with Postgres as the record and JetStream as the road,
// rather than with a durable JetStream consumer per store:
//
//  1. The stream registers with the process's live hub (one core subscription to
//     handoff.store.*.ticket.> per adapter process) BEFORE reading anything, so no ticket can
//     fall between the backlog and the live part.
//  2. It replays the store's tickets of the last Config.ReplayWindow that this reader has not
//     acknowledged, from Postgres, ordered by sequence.
//  3. Then it sends live tickets: those this process raised, as soon as they are committed, and
//     everyone's as JetStream carries them (so a ticket raised here comes twice). Each has its
//     sequence; one at or below the last sent is a duplicate and is skipped; one past a gap (a
//     message lost on the way, a live buffer that overflowed, a publish retried out of order, a
//     ticket another copy raised first) makes the stream read the missing part from Postgres
//     first. A once-per-CatchUpInterval check of every open store's last sequence catches a
//     stream whose newest ticket never arrived live.
//
// Why not a durable consumer per store: a durable consumer's acknowledgement is one cursor for
// all who share it (JetStream hands each message to one of them), so two terminals of a store
// would need a consumer each, created and deleted as terminals come and go, with their
// acknowledgements living in JetStream, not next to the terminals, and a feed limited to the
// stream's retention. Keeping acknowledgements per reader in Postgres makes replay exact,
// survives any restart (the adapter keeps no state in memory that matters), lets any number of
// adapter copies serve any terminal, and keeps the rule "Postgres is the truth": a feed can
// always be rebuilt from the tickets table. JetStream (with its duplicate window on the ticket
// id) carries the ticket to every adapter copy within milliseconds.
//
// Tickets carry the order as of the event (never its pickup code) and a stable ticket id;
// terminals drop duplicates by id, and for changes of one order the order's version is the
// truth (two adapter copies may handle two events of one order side by side).
//
// # Who may do what
//
// Terminals present "Authorization: Bearer hot_<terminal id>_<secret>" (RegisterTerminal shows
// it once; only its SHA-256 is kept); staff may present a staff JWT (package auth). Both
// resolve to a principal with store ids, and every TerminalService call checks its store_id
// against them (PermissionDenied naming store_id) before doing anything. A terminal's row, once
// read, checks its credential for Config.CredentialCacheTTL without being read again. A revoked
// credential is refused at once in the copy that revoked it and as soon as the TerminalRevoked
// event arrives in every other (within the TTL should it be lost), and its open streams are
// closed. TerminalAdminService needs an admin JWT.
//
// Staff actions are forwarded to fulfilment's StoreOrderService over gRPC: a terminal's call
// carries a staff JWT the adapter mints for that terminal and that one store, valid for
// Config.TokenTTL; a staff or admin JWT caller's own token is forwarded. Fulfilment checks the
// store again. Pausing and resuming a store, and vendor stock events, go to inventory's
// InventoryAdminService with an admin JWT the adapter mints per call, only after the store
// check (vendor events: after the signature check).
//
// # Escalations and reminders
//
// Fulfilment publishes not_accepted (an order still CONFIRMED after its deployment-wide
// NotAcceptedAfter) and expiring_soon; both become tickets. A store may set its own escalation
// time (SetStoreSettings); then the adapter runs the timer itself (escalation_timers, swept by
// Run) and ignores fulfilment's not_accepted for that store. The time counts the store's open
// hours (read from inventory when a timer falls due; plain time should inventory not answer),
// as fulfilment's does. Before a timer fires, fulfilment is asked whether its order still
// waits: the acceptance that clears it may not have reached the adapter yet (fulfilment's outbox
// not yet relayed, the adapter restarting, its consumer behind). Should fulfilment not answer,
// a timer fires only once every order event published before it fell due has been handled.
//
// # Vendor POS webhooks
//
// Outbound: each ticket of a store with an enabled webhook is delivered as JSON (TicketRaised)
// with "Handoff-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>", retried with
// exponential backoff (capped at Config.WebhookMaxBackoff) and jitter for as long as its ticket
// is of use (Config.WebhookGiveUpAfter, the replay window by default), so a vendor POS gets, when
// it answers again, what a terminal reconnecting would; only then is it kept as a dead letter an
// operator lists (ListFailedDeliveries) and replays (ReplayDelivery). A store's endpoint also
// backs off as a whole: after a failed attempt the store's deliveries wait, and one at a time
// tries it (a probe) once the store's backoff is over; an answered probe sends the rest at
// once. An endpoint that never answers holds one send slot per backoff, not one per ticket
// waiting for it (claimDeliveriesSQL). Inbound: POST
// /webhooks/vendor/{store_id} with the same signature scheme and the store's secret accepts
// sales, returns and stock counts and applies them at inventory, idempotently by the vendor's
// event id; a bad signature or a timestamp more than Config.SignatureTolerance away is refused
// (401), logged and changes nothing.
package posadapter

import (
	"context"
	"embed"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/coalesce"
	"github.com/handoff-dev/handoff/internal/edge"
	"github.com/handoff-dev/handoff/internal/egress"
	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/tracing"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/proto/handoff/pos/v1/posv1connect"
)

// Schema is the Postgres schema the pos-adapter owns by default.
const Schema = "pos"

// PoolOptions are the options of the pos-adapter's Postgres pool: the statements that run per
// ticket, acknowledgement or terminal find their rows by key (a ticket, a store's feed, a
// terminal, a due time), so each is planned once per connection (pgdb.WithKeyedPlans); the
// janitor's deletes and admin listings that have no index to use scan, as before. Its batched acknowledgements' array parameters otherwise
// had every call planned anew, which cost more than running them.
func PoolOptions() []pgdb.Option { return []pgdb.Option{pgdb.WithKeyedPlans()} }

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations are the pos-adapter's goose migrations, for pgdb.Migrate.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the embedded path is fixed at build time
	}
	return sub
}

// Config configures the pos-adapter. Pool, NC, JS, Keys, Fulfilment and Inventory are
// required; every duration has a production default and tests shorten them.
type Config struct {
	// Pool connects to the pos schema (search_path set by pgdb.Open).
	Pool *pgxpool.Pool
	// NC carries live tickets and revocations to this process.
	NC *nats.Conn
	// JS consumes fulfilment's order events and relays the pos outbox.
	JS jetstream.JetStream
	// Keys verifies staff and admin JWTs and signs the tokens the adapter mints.
	Keys *auth.KeySet
	// Fulfilment is a connection to fulfilment's gRPC API (StoreOrderService).
	Fulfilment grpc.ClientConnInterface
	// Inventory is a connection to inventory's gRPC API (InventoryAdminService, and
	// StoreLocatorService to check the stores admins and staff name).
	Inventory grpc.ClientConnInterface
	// AllowedOrigins lists browser origins allowed by CORS (browser-based terminals).
	AllowedOrigins []string
	// TrustedProxies are the reverse proxies in front of the adapter whose X-Forwarded-For
	// names the terminal or vendor (edge.WithClientAddress); none means the peer is.
	TrustedProxies []net.IPNet
	// Logger receives the adapter's logs.
	Logger *slog.Logger
	// MaxRequestBytes caps one request message or webhook body. Default 1 MiB.
	MaxRequestBytes int

	// ReplayWindow is how far back a reader's unacknowledged tickets are replayed when it
	// connects. Default 72h: a store closed over a weekend still gets Friday evening's tickets.
	ReplayWindow time.Duration
	// TicketRetention is how long tickets and their acknowledgements are kept. Default 30 days.
	TicketRetention time.Duration
	// StreamEndGrace is how long a ticket stream that must end (its terminal revoked, or
	// superseded past MaxStreamsPerReader) may stay stuck in a send its client does not read
	// before its writes are cut. Default 5s.
	StreamEndGrace time.Duration
	// MaxStreamsPerReader caps the ticket streams of one store that one terminal (or one staff
	// member) keeps open in this process; opening one more ends its oldest. Default 8.
	MaxStreamsPerReader int
	// CatchUpInterval is how often open streams are checked against the stores' last sequence
	// (a ticket whose live message was lost) and revocations. Default 1s.
	CatchUpInterval time.Duration
	// EscalationInterval is how often per-store escalation timers are swept. Default 1s.
	EscalationInterval time.Duration
	// ConsumerConcurrency is how many order events are handled at once. One (the default)
	// keeps a store's tickets in event order.
	ConsumerConcurrency int
	// ConsumerBatchSize is how many waiting order events the consumer may handle in one
	// transaction (package inbox, batch mode). Default 64; 1 handles each on its own.
	ConsumerBatchSize int
	// TokenTTL is the lifetime of the staff and admin tokens the adapter mints for one
	// forwarded call. Default 1m.
	TokenTTL time.Duration
	// CredentialCacheTTL is how long a terminal's row, once read, checks its credential without
	// reading it again. A revocation takes effect at once all the same (in other copies as soon
	// as its event arrives); this bounds the time should the event be lost. Default 1s: a busy
	// terminal is still read at most once a second. Negative reads the row on every call.
	CredentialCacheTTL time.Duration
	// CallTimeout bounds a forwarded call without a client deadline. Default 10s.
	CallTimeout time.Duration

	// WebhookTimeout bounds one outbound delivery. Default 10s.
	WebhookTimeout time.Duration
	// WebhookGiveUpAfter is how long a failing delivery is retried, from when it was queued
	// (its ticket raised, or an operator's replay), before it is kept as a dead letter.
	// Default ReplayWindow: a vendor POS that comes back (a router rebooted, a weekend's
	// outage) gets every ticket a terminal reconnecting then would, not only those of the last
	// few minutes; nothing else retries a dead letter.
	WebhookGiveUpAfter time.Duration
	// WebhookBackoff is the wait after the first failure; it doubles per attempt, with ±20%
	// jitter, up to WebhookMaxBackoff. Defaults 2s and 1m: the cap is how late a ticket may
	// reach a vendor POS after it answers again. A store's endpoint backs off the same way,
	// per failed try in a row: meanwhile its deliveries wait, and one at a time tries it. A
	// vendor's Retry-After (on a 429 or 503) makes it wait at least that long (at most 1 h).
	WebhookBackoff    time.Duration
	WebhookMaxBackoff time.Duration
	// WebhookPollInterval is how often due deliveries are looked for, unwoken, while some are
	// pending (another copy's retries). Default 1s.
	WebhookPollInterval time.Duration
	// WebhookIdlePollInterval is how often they are looked for with none pending: the safety
	// net for deliveries another copy queued and went away without sending (a copy wakes its
	// own dispatcher when it queues some). Default 1m.
	WebhookIdlePollInterval time.Duration
	// WebhookClient sends outbound deliveries (a copy of it, that follows no redirect). Default:
	// an http.Client with WebhookTimeout that connects only to public addresses and
	// WebhookAllowNetworks.
	WebhookClient *http.Client
	// WebhookAllowNetworks are the networks besides the public internet that webhooks may
	// reach: a vendor POS on the retailer's own network (10.20.0.0/16), loopback in development
	// (127.0.0.0/8). None by default: a webhook URL is set through the admin API, and must not
	// reach what only Handoff can (its own ports, cloud metadata, the cluster's services). A
	// URL naming such an address is refused when set; a name resolving to one, at each
	// connection.
	WebhookAllowNetworks []netip.Prefix
	// SignatureTolerance is how far an inbound webhook's timestamp may be from now. Default 5m.
	SignatureTolerance time.Duration
	// VendorRefusalRate and VendorRefusalBurst are the refused inbound vendor signatures one
	// client address may send for one store, a second on average and at once; every store's
	// together from one address get VendorAddressRoom times as many (see serveVendorWebhook).
	// Default 10, 50 and 16: a vendor's address posting for up to 16 stores whose secrets it
	// has wrong (a partial rotation) still gets the others' events through.
	VendorRefusalRate  float64
	VendorRefusalBurst int
	VendorAddressRoom  int
}

func (c *Config) setDefaults(guard *egress.Guard) {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.ReplayWindow, 72*time.Hour)
	def(&c.TicketRetention, 30*24*time.Hour)
	def(&c.CatchUpInterval, time.Second)
	def(&c.StreamEndGrace, 5*time.Second)
	def(&c.EscalationInterval, time.Second)
	def(&c.TokenTTL, time.Minute)
	if c.CredentialCacheTTL == 0 {
		c.CredentialCacheTTL = time.Second
	}
	def(&c.CallTimeout, 10*time.Second)
	def(&c.WebhookTimeout, 10*time.Second)
	def(&c.WebhookBackoff, 2*time.Second)
	def(&c.WebhookMaxBackoff, time.Minute)
	def(&c.WebhookPollInterval, time.Second)
	def(&c.WebhookIdlePollInterval, time.Minute)
	def(&c.SignatureTolerance, 5*time.Minute)
	if c.MaxRequestBytes <= 0 {
		c.MaxRequestBytes = 1 << 20
	}
	if c.MaxStreamsPerReader <= 0 {
		c.MaxStreamsPerReader = 8
	}
	if c.ConsumerConcurrency <= 0 {
		c.ConsumerConcurrency = 1
	}
	if c.ConsumerBatchSize <= 0 {
		c.ConsumerBatchSize = 64
	}
	client := &http.Client{Timeout: c.WebhookTimeout, Transport: guard.Transport()}
	if c.WebhookClient != nil {
		copied := *c.WebhookClient // the redirect policy must not change the caller's client
		client = &copied
	}
	// A redirect is not followed: it would take the signed ticket wherever the vendor's
	// endpoint points, past the URL rules SetStoreWebhook applies (https, or http to a loopback
	// host). A 3xx is a failed attempt, retried like any other.
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.WebhookClient = client
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.ReplayWindow = min(c.ReplayWindow, c.TicketRetention)
	def(&c.WebhookGiveUpAfter, c.ReplayWindow)
}

// WebhookAllowNetworks's setting in the handoff command, named in refusals.
const WebhookAllowNetworksSetting = "HANDOFF_WEBHOOK_ALLOW_NETWORKS (-webhook-allow-networks)"

// Adapter is the pos-adapter: its edge server and its background work.
type Adapter struct {
	cfg        Config
	db         *pgxpool.Pool
	keys       *auth.KeySet
	log        *slog.Logger
	fulfilment fulfilmentv1.StoreOrderServiceClient
	inventory  inventoryv1.InventoryAdminServiceClient
	locator    inventoryv1.StoreLocatorServiceClient

	handler http.Handler
	health  *edge.Health
	hub     *hub

	// draining ends when Serve starts shutting down: open streams end at once (clients
	// reconnect elsewhere) instead of holding the shutdown for its whole grace.
	draining    context.Context
	stopStreams context.CancelFunc
	webhookWake chan struct{}
	webhookNets *egress.Guard // which addresses a webhook URL may name
	// webhookHint is a store that has just had deliveries queued here: the next round's walk
	// starts at it (see runWebhookDispatcher).
	webhookHint atomic.Pointer[string]
	staffTokens mintedTokens
	credentials credentialCache
	// handOvers limits refused pickup-code attempts per caller across all orders: fulfilment
	// locks an order after 5 wrong codes, and this keeps a stolen credential from trying codes
	// on many orders quickly.
	handOvers *edge.Limiter
	// refusedAuth limits refused credentials and tokens per client address: each costs a
	// lookup (a credential not in the cache is read from the database) or a signature check,
	// and a flood of made-up ones would otherwise cost that without limit. Only refusals are
	// charged, and an address over its limit still gets through with a credential checked
	// without a lookup (admit), so a store's terminals behind one address keep working while
	// made-up credentials come from it.
	refusedAuth *edge.AddressLimiter
	// refusedVendorAddr and refusedVendor limit refused inbound vendor events (see
	// serveVendorWebhook): per address, and per address and store.
	refusedVendorAddr *edge.AddressLimiter
	refusedVendor     *edge.Limiter
	// acks are AckTicket's writes, batched (see ackwrites.go).
	acks *coalesce.Batcher[ackReq, bool]
}

// Refused pickup-code attempts one terminal or staff member may make: a slip now and then is
// normal, a guessing script makes many a second.
const (
	handOverRate  = 1.0 // a second, on average
	handOverBurst = 10
)

// Refused credentials and tokens one address may present: far above a terminal retrying with
// a revoked credential, far below a script making them up.
const (
	refusedAuthRate  = 10.0 // a second, on average
	refusedAuthBurst = 50
	// vendorAddrRoom is how many stores' worth of refused vendor signatures one address may
	// send before it is told to wait, by default (Config.VendorAddressRoom).
	vendorAddrRoom = 16
)

// ConsumerName is the durable JetStream consumer (and processed_events key) of the adapter's
// order-event consumer, shared by every copy.
const ConsumerName = "pos-adapter-order-events"

// New builds the adapter. Nothing runs until Run and Serve.
func New(cfg Config) (*Adapter, error) {
	switch {
	case cfg.Pool == nil:
		return nil, errors.New("pos-adapter: Config.Pool is required")
	case cfg.NC == nil || cfg.JS == nil:
		return nil, errors.New("pos-adapter: Config.NC and Config.JS are required")
	case cfg.Keys == nil:
		return nil, errors.New("pos-adapter: Config.Keys is required")
	case cfg.Fulfilment == nil:
		return nil, errors.New("pos-adapter: Config.Fulfilment (fulfilment's gRPC connection) is required")
	case cfg.Inventory == nil:
		return nil, errors.New("pos-adapter: Config.Inventory (inventory's gRPC connection) is required")
	}
	guard := egress.New(cfg.WebhookAllowNetworks, WebhookAllowNetworksSetting)
	cfg.setDefaults(guard)
	log := cfg.Logger.With("component", "pos-adapter")
	draining, stop := context.WithCancel(context.Background())
	a := &Adapter{
		cfg:         cfg,
		db:          cfg.Pool,
		keys:        cfg.Keys,
		log:         log,
		fulfilment:  fulfilmentv1.NewStoreOrderServiceClient(cfg.Fulfilment),
		inventory:   inventoryv1.NewInventoryAdminServiceClient(cfg.Inventory),
		locator:     inventoryv1.NewStoreLocatorServiceClient(cfg.Inventory),
		draining:    draining,
		stopStreams: stop,
		webhookWake: make(chan struct{}, 1),
		webhookNets: guard,
	}
	a.hub = newHub(a)
	a.credentials.ttl = cfg.CredentialCacheTTL
	a.handOvers = edge.NewLimiter(handOverRate, handOverBurst)
	a.refusedAuth = edge.NewAddressLimiter(refusedAuthRate, refusedAuthBurst)
	rate, burst := cfg.VendorRefusalRate, cfg.VendorRefusalBurst
	if rate <= 0 {
		rate = refusedAuthRate
	}
	if burst <= 0 {
		burst = refusedAuthBurst
	}
	room := cfg.VendorAddressRoom
	if room <= 0 {
		room = vendorAddrRoom
	}
	a.refusedVendorAddr = edge.NewAddressLimiter(float64(room)*rate, room*burst)
	a.refusedVendor = edge.NewLimiter(rate, burst)
	a.acks = coalesce.New(maxAckBatch, a.ackMany)

	// Every TerminalService and TerminalAdminService call answered is counted once
	// (handoff_edge_requests_total{edge="pos"}), refusals included: its interceptor comes
	// first, so it sees what authentication refuses.
	requests := edge.NewRequests(metricsEdge, posv1connect.TerminalServiceName, posv1connect.TerminalAdminServiceName)
	interceptors := []connect.Interceptor{requests.Interceptor(), authInterceptor{a: a}, edge.StorableText()}
	if tracing.Enabled() {
		interceptors = slices.Insert(interceptors, 0, tracing.EdgeInterceptor())
	}
	opts := []connect.HandlerOption{
		connect.WithReadMaxBytes(cfg.MaxRequestBytes),
		edge.WithCodec(),
		connect.WithInterceptors(interceptors...),
		// Only responses worth it are gzipped for clients that accept it: a fresh gzip state per
		// message cost more CPU than the whole protobuf encoding of a small reply saved in bytes.
		connect.WithCompressMinBytes(edge.CompressMinBytes),
	}
	mux := http.NewServeMux()
	// Calls are authenticated as soon as their headers are in (edge.AdmitBeforeBody): an unknown
	// caller trickling bodies holds nothing for long.
	admit := func(ctx context.Context, procedure string, header http.Header, peerAddr string) (context.Context, error) {
		waiting, cancel := ctx, context.CancelFunc(func() {})
		if cfg.Keys.TrustsProvider() {
			waiting, cancel = edge.CallerTimeout(ctx, header)
		}
		defer cancel()
		return a.admit(ctx, waiting, peerAddr, procedure, header.Get("Authorization"))
	}
	terminalPath, terminalHandler := posv1connect.NewTerminalServiceHandler(terminalAPI{a: a}, opts...)
	mux.Handle(requests.AdmitBeforeBody(terminalPath, edge.WithWriteControl(terminalHandler, cfg.StreamEndGrace, posv1connect.TerminalServiceStreamTicketsProcedure), admit, opts...))
	adminPath, adminHandler := posv1connect.NewTerminalAdminServiceHandler(adminAPI{a: a}, opts...)
	mux.Handle(requests.AdmitBeforeBody(adminPath, adminHandler, admit, opts...))
	mux.Handle("POST "+VendorWebhookPath+"{store_id}", http.HandlerFunc(a.serveVendorWebhook))
	a.health = edge.Mount(mux, []string{posv1connect.TerminalServiceName, posv1connect.TerminalAdminServiceName},
		connect.WithReadMaxBytes(cfg.MaxRequestBytes))
	a.handler = edge.WithClientAddress(edge.WithCORS(edge.WithGRPCWebText(mux), cfg.AllowedOrigins), cfg.TrustedProxies)
	return a, nil
}

// Handler is the adapter's whole HTTP surface: TerminalService and TerminalAdminService
// (gRPC, gRPC-web, Connect), health, reflection and the inbound vendor webhook.
func (a *Adapter) Handler() http.Handler { return a.handler }

// SetServing reports the adapter's health SERVING or NOT_SERVING (a dependency of its process
// down); it has no effect once the adapter has begun to stop.
func (a *Adapter) SetServing(serving bool) { a.health.SetServing(serving) }

// Serve serves on lis until ctx is cancelled, then reports NOT_SERVING, ends open ticket
// streams (terminals reconnect and replay what they have not acknowledged) and drains unary
// calls for up to grace.
func (a *Adapter) Serve(ctx context.Context, lis net.Listener, grace time.Duration) error {
	return edge.ServeHTTP(ctx, lis, a.handler, grace, a.log, func() {
		a.health.Drain()
		a.stopStreams()
	})
}

// Run does the adapter's background work until ctx ends: the order-event consumer that raises
// tickets, the consumer of customer erasures (forget.go), the pos outbox relay that puts them on JetStream, the live hub that feeds open
// streams (and closes revoked ones), the escalation sweeper, the webhook dispatcher and the
// retention janitor. Every part is safe to run in several copies of the adapter at once.
func (a *Adapter) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.hub.run(gctx) })
	g.Go(func() error { return a.consumeOrderEvents(gctx) })
	g.Go(func() error { return a.consumeForgotten(gctx) })
	g.Go(func() error {
		return outbox.NewRelay(a.db, a.cfg.JS, outbox.RelayConfig{Logger: a.log}).Run(gctx)
	})
	g.Go(func() error { a.runEscalations(gctx); return nil })
	g.Go(func() error { a.runWebhookDispatcher(gctx); return nil })
	g.Go(func() error { a.runJanitor(gctx); return nil })
	err := g.Wait()
	if ctx.Err() != nil {
		return nil // stopped, possibly while a part was still starting
	}
	return err
}

// sleep waits d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
