// Package stack assembles Handoff's parts into a running system: the infrastructure it needs
// (an embedded NATS server with JetStream and a private PostgreSQL cluster in the one-process
// mode, or external ones), each service with its gRPC API, NATS endpoints and outbox relay, the
// gateway and the pos-adapter. cmd/handoff runs it; end-to-end tests start it in-process.
package stack

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"golang.org/x/text/currency"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/health" // the client side of healthCheckConfig (roundRobin)
	"google.golang.org/grpc/keepalive"

	"github.com/handoff-dev/handoff/gateway"
	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/backlog"
	"github.com/handoff-dev/handoff/internal/demo"
	"github.com/handoff-dev/handoff/internal/edge"
	"github.com/handoff-dev/handoff/internal/grpcserver"
	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/tracing"
	"github.com/handoff-dev/handoff/services/fulfilment/notify"
)

// Targets a process can run. "all" is the one-process mode; every other target is one
// deployable part.
const (
	TargetAll        = "all"
	TargetCatalog    = "catalog"
	TargetInventory  = "inventory"
	TargetCart       = "cart"
	TargetFulfilment = "fulfilment"
	TargetGateway    = "gateway"
	TargetPOSAdapter = "pos-adapter"
)

// Targets lists every valid target.
var Targets = []string{TargetAll, TargetCatalog, TargetInventory, TargetCart, TargetFulfilment, TargetGateway, TargetPOSAdapter}

// Config is everything a Handoff process needs to know.
type Config struct {
	// Target is the part to run (see Targets).
	Target string
	// DataDir holds the one-process mode's local state: JetStream files and the private
	// PostgreSQL cluster.
	DataDir string

	// DatabaseURL is the default Postgres URL for every service. Empty in the one-process mode
	// starts a private cluster in DataDir.
	DatabaseURL string
	// ServiceDatabaseURLs overrides DatabaseURL per service name, so a deployment can split
	// the services' schemas into separate databases.
	ServiceDatabaseURLs map[string]string
	// PostgresPort is the private cluster's port; 0 picks a free one.
	PostgresPort int

	// NATSURL is an external NATS server. Empty in the one-process mode embeds one.
	NATSURL string
	// EmbeddedNATSAddr is where the embedded NATS server listens ("127.0.0.1:4223"; port 0
	// picks one). It avoids 4222 so it never collides with a system NATS server.
	EmbeddedNATSAddr string
	// StreamReplicas is the JetStream replica count (1 on one server, 3 in a cluster).
	StreamReplicas int
	// DBMaxConns caps each service's Postgres pool (every service and the pos-adapter has
	// one). 0: the database URL's pool_max_conns where it sets one, else DefaultDBMaxConns.
	DBMaxConns int

	// Listen addresses.
	GatewayAddr    string
	POSAdapterAddr string
	MetricsAddr    string
	// Services' gRPC addresses: where each listens, and where the edges dial them.
	CatalogAddr    string
	InventoryAddr  string
	CartAddr       string
	FulfilmentAddr string

	// JWTKeys is the token key set, "kid:base64key[,...]" (first signs). Empty with the all
	// target uses a development key kept in DataDir.
	JWTKeys string
	// IdentityProvider, when its JWKSURLs are set, is the retailer's identity provider: every
	// part accepts the tokens it signs besides Handoff's own (auth.Provider).
	IdentityProvider auth.Provider
	// PickupCodeSecret derives pickup codes (fulfilment); the same in every copy. Empty with
	// the all target uses a secret kept in DataDir.
	PickupCodeSecret string
	// Notify configures customer notifications (signed webhook, SMTP email).
	Notify       notify.Config
	pickupSecret []byte

	// AllowedOrigins are the browser origins the gateway accepts (CORS).
	AllowedOrigins []string
	// TrustedProxies are the reverse proxies in front of the gateway and the pos-adapter whose
	// X-Forwarded-For is believed (edge.WithClientAddress).
	TrustedProxies []net.IPNet
	// WebhookAllowNetworks are the networks besides the public internet that stores' vendor
	// webhooks may reach (posadapter.Config.WebhookAllowNetworks). None by default.
	WebhookAllowNetworks []netip.Prefix
	// RateLimits at the gateway; zero means its defaults.
	RateLimits gateway.RateLimits
	// Currency is the catalog's ISO 4217 currency.
	Currency string
	// LoadDemo loads the demo chain into an empty database.
	LoadDemo bool
	// DemoTimeZone, when set, is the IANA zone the demo chain's stores keep their hours in,
	// instead of the chain's own (America/Los_Angeles): a load run picks one where it is late
	// morning now, so that every store takes orders whatever the time of day here.
	DemoTimeZone string
	// ShutdownGrace bounds the servers' graceful draining on stop; a whole stop takes at most
	// MaxShutdown of it.
	ShutdownGrace time.Duration
	// DrainDelay is how long, once told to stop, every server goes on taking connections and
	// calls while its health says NOT_SERVING, before it drains: behind a load balancer or a
	// Kubernetes Service, which stop sending new connections only a moment after the signal,
	// those would otherwise be refused. 0 (the default, right for one process on a laptop):
	// none.
	DrainDelay time.Duration
	// PersonalDataRetention is how long after an order ended fulfilment keeps its shopper's
	// contact fields (pickup name, email, note); 0 means DefaultPersonalDataRetention.
	PersonalDataRetention time.Duration
	// StartWait is how long a start waits for an external NATS or PostgreSQL that does not
	// answer yet (started at the same moment, say); 0 means DefaultStartWait.
	StartWait time.Duration

	Logger *slog.Logger
}

// Ready describes a started system: where each part listens.
type Ready struct {
	GatewayAddr    string
	POSAdapterAddr string
	MetricsAddr    string
	// ServiceAddrs are the services' gRPC addresses by name.
	ServiceAddrs map[string]string
	NATSURL      string
	// DatabaseURL is the default database (the private cluster's in the one-process mode).
	DatabaseURL string
	// Keys sign and verify tokens (tests and `handoff token` mint with them).
	Keys *auth.KeySet
}

func (c *Config) runs(part string) bool { return c.Target == TargetAll || c.Target == part }

// DefaultPersonalDataRetention is how long after an order ended its shopper's contact fields
// are kept by default: long enough for a complaint or a refund about it, no longer.
const DefaultPersonalDataRetention = 90 * 24 * time.Hour

// DefaultDBMaxConns is a service pool's cap when neither the configuration nor the database URL
// sets one: pgx's own default, max(4, CPUs), made checkouts wait for a connection under load
// while the database had room.
const DefaultDBMaxConns = 16

// maxDBConns bounds a pool's connections: far beyond what PostgreSQL serves well (its default
// max_connections is 100), and within the driver's int32.
const maxDBConns = 10_000

// SettingError is a configuration value Validate refuses. Setting is its name as the handoff
// command's flag has it (shutdown-grace), so the command can say where the value came from: the
// flag, or its variable.
type SettingError struct {
	Setting string
	Value   string
	Secret  bool // Value is left out: it is a secret
	Problem string
}

func (e *SettingError) Error() string {
	if e.Secret {
		return fmt.Sprintf("%s: %s", strings.ReplaceAll(e.Setting, "-", " "), e.Problem)
	}
	return fmt.Sprintf("%s %q: %s", strings.ReplaceAll(e.Setting, "-", " "), e.Value, e.Problem)
}

func settingError(setting string, value any, problem string, args ...any) error {
	return &SettingError{Setting: setting, Value: fmt.Sprint(value), Problem: fmt.Sprintf(problem, args...)}
}

// Validate checks the configuration and fills defaults.
func (c *Config) Validate() error {
	if c.Target == "" {
		c.Target = TargetAll
	}
	if !slices.Contains(Targets, c.Target) {
		return settingError("target", c.Target, "want one of %s", strings.Join(Targets, ", "))
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.ShutdownGrace < 0 {
		// As a negative connection count is refused: taken for the default, it would be a
		// 10 s drain nobody asked for.
		return settingError("shutdown-grace", c.ShutdownGrace, "want a positive duration, or 0 for the default")
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = 10 * time.Second
	}
	if c.PersonalDataRetention < 0 {
		return settingError("personal-data-retention", c.PersonalDataRetention, "want a positive duration, or 0 for the default")
	}
	if c.PersonalDataRetention == 0 {
		c.PersonalDataRetention = DefaultPersonalDataRetention
	}
	if c.DrainDelay < 0 {
		return settingError("drain-delay", c.DrainDelay, "want a positive duration, or 0 for none")
	}
	if c.StartWait < 0 {
		return settingError("start-wait", c.StartWait, "want a positive duration, or 0 for the default")
	}
	if c.StartWait == 0 {
		c.StartWait = DefaultStartWait
	}
	if c.StreamReplicas < 0 || c.StreamReplicas > 5 {
		return settingError("stream-replicas", c.StreamReplicas, "want 1 to 5 (JetStream's limit), 3 in a production cluster")
	}
	if c.StreamReplicas == 0 {
		c.StreamReplicas = 1
	}
	if c.StreamReplicas > 1 && c.NATSURL == "" {
		return settingError("stream-replicas", c.StreamReplicas, "the embedded NATS server keeps one copy; use 1, or a NATS cluster (NATS_URL)")
	}
	if c.DBMaxConns < 0 || c.DBMaxConns > maxDBConns {
		return settingError("db-max-conns", c.DBMaxConns, "want a positive number up to %d, or 0 for the default", maxDBConns)
	}
	if c.Currency == "" {
		c.Currency = demo.Currency
	}
	unit, err := currency.ParseISO(c.Currency)
	if err != nil {
		return settingError("currency", c.Currency, "want an ISO 4217 code such as USD or EUR")
	}
	c.Currency = unit.String()
	if c.DemoTimeZone != "" {
		if _, err := time.LoadLocation(c.DemoTimeZone); err != nil {
			return fmt.Errorf("demo time zone %q: %w", c.DemoTimeZone, err)
		}
	}
	if c.LoadDemo && c.Currency != demo.Currency {
		return settingError("currency", c.Currency, "the demo chain is priced in %s; run with -currency %s, or without the demo (-demo=false)", demo.Currency, demo.Currency)
	}
	if c.Target != TargetAll {
		// The gateway reaches the services over gRPC only: it needs no NATS.
		if c.NATSURL == "" && c.Target != TargetGateway {
			return fmt.Errorf("target %s needs NATS_URL (only the all target embeds NATS)", c.Target)
		}
		if c.JWTKeys == "" {
			return fmt.Errorf("target %s needs HANDOFF_JWT_KEYS (only the all target makes a development key)", c.Target)
		}
		if c.Target == TargetFulfilment && c.PickupCodeSecret == "" {
			return fmt.Errorf("target fulfilment needs HANDOFF_PICKUP_CODE_SECRET (at least 16 bytes, the same in every copy)")
		}
		needsDB := c.Target != TargetGateway
		if needsDB && c.DatabaseURL == "" && c.ServiceDatabaseURLs[c.Target] == "" {
			return fmt.Errorf("target %s needs DATABASE_URL (only the all target starts a private PostgreSQL)", c.Target)
		}
	}
	if err := c.validateIdentityProvider(); err != nil {
		return err
	}
	// Secrets too short are refused here, naming the setting, not at the start of the part that
	// uses them (the value is not repeated: it is a secret).
	if n := len(c.PickupCodeSecret); n > 0 && n < 16 {
		return &SettingError{Setting: "pickup-code-secret", Secret: true, Problem: fmt.Sprintf("want at least 16 bytes, the same in every copy; got %d", n)}
	}
	if n := len(c.Notify.WebhookSecret); n > 0 && n < 16 {
		return &SettingError{Setting: "notify-webhook-secret", Secret: true, Problem: fmt.Sprintf("want at least 16 bytes; got %d", n)}
	}
	if c.DataDir == "" {
		c.DataDir = ".data"
	}
	return nil
}

// validateIdentityProvider checks the identity provider's settings, which go together: its
// keys' URL, its issuer and the audience it names Handoff by.
func (c *Config) validateIdentityProvider() error {
	p := c.IdentityProvider
	if len(p.JWKSURLs) == 0 && p.Issuer == "" && p.Audience == "" {
		return nil
	}
	for _, u := range p.JWKSURLs {
		if err := auth.CheckJWKSURL(u); err != nil {
			return settingError("jwt-jwks-url", u, "%v", err)
		}
	}
	switch {
	case len(p.JWKSURLs) == 0:
		return settingError("jwt-jwks-url", "", "needed with jwt-issuer and jwt-audience: where the identity provider publishes its keys (its jwks_uri)")
	case p.Issuer == "":
		return settingError("jwt-issuer", "", "needed with jwt-jwks-url: the identity provider's iss claim, exactly")
	case p.Audience == "":
		return settingError("jwt-audience", "", "needed with jwt-jwks-url: the aud the identity provider puts in tokens for Handoff")
	case p.Refresh < 0:
		return settingError("jwt-jwks-refresh", p.Refresh, "want a positive interval")
	}
	return nil
}

// Run starts the configured part(s), calls ready once everything listens, and runs until ctx
// is cancelled or a part fails; then it drains and stops everything it started, in reverse.
func Run(ctx context.Context, cfg Config, ready func(Ready)) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	s := &system{cfg: cfg, log: cfg.Logger}
	s.readiness.log = cfg.Logger
	defer s.closeAll()
	if err := s.start(ctx); err != nil {
		if ctx.Err() != nil {
			// Stopped (Ctrl-C) while starting: whatever the step it cut short says about that
			// (a migration's "context canceled", initdb's transcript) is not a failure.
			s.log.Info("Handoff stopped before it was ready", "cut_short", err) // which step was under way
			return nil
		}
		return err
	}
	return s.serve(ctx, ready)
}

// system is one running process's parts and how to stop them.
type system struct {
	cfg     Config
	log     *slog.Logger
	closers []closer // run in reverse on shutdown

	keys        *auth.KeySet
	nc          *nats.Conn
	js          jetstream.JetStream
	databaseURL string
	readiness   readiness
	// inproc, in the one-process mode, holds each service's in-process channel, where it is
	// also registered for the gateway and the pos-adapter to call directly
	// (grpcserver.InProcess); nil otherwise.
	inproc map[string]*grpcserver.Channel

	ready Ready
	// servers run until the serve context ends, then drain; loops run until the servers are done.
	servers []func(ctx context.Context) error
	// natsDrains stop the services' NATS endpoints, in start order (see serveNATS).
	natsDrains []func(ctx context.Context) error
	// drainFloor replaces natsDrainFloor where set (tests).
	drainFloor time.Duration
	loops      []func(ctx context.Context) error // background loops: see serve
	// afterListen runs once every server is serving (demo loads).
	afterListen []func(ctx context.Context) error
	demoParts   []demoPart // services loading the demo chain (loadDemo)
}

func (s *system) onClose(f func(context.Context) error) {
	s.closers = append(s.closers, closer{close: f})
}

// onCloseWithin adds a closer with a budget of its own instead of a share of closeBudget.
func (s *system) onCloseWithin(budget time.Duration, f func(context.Context) error) {
	s.closers = append(s.closers, closer{close: f, budget: budget})
}

// closer is one step of closing, run in reverse order of adding.
type closer struct {
	close  func(context.Context) error
	budget time.Duration // its own; 0: closeBudget's shared deadline
}

// closeWithin runs close until ctx ends, then leaves it running: some closers wait without a
// context (pgxpool's Close for connections still held, the embedded NATS server's shutdown),
// and the process is exiting anyway.
func closeWithin(ctx context.Context, close func(context.Context) error) error {
	done := make(chan error, 1)
	go func() { done <- close(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("not closed within the close budget: %w", context.Cause(ctx))
	}
}

func (s *system) natsDrainFloor() time.Duration {
	if s.drainFloor > 0 {
		return s.drainFloor
	}
	return natsDrainFloor
}

// Shutdown's phases after the servers' grace (see MaxShutdown).
const (
	// natsDrainFloor is the least time the NATS endpoints get to answer what they took: they
	// take requests while the servers drain (a checkout the edge is finishing calls on), so a
	// request taken in the grace's last moment is still answered, its commit relayed.
	natsDrainFloor = 3 * time.Second
	// closeBudget bounds closing what the system opened (pools, the NATS connection's drain,
	// the embedded server): a closer still running then is not waited for, and what it held is
	// safe anyway (the outbox and the consumers' inboxes are in Postgres).
	closeBudget = 5 * time.Second
	// postgresStopBudget is the private Postgres's own time to stop (a fast shutdown, its
	// checkpoint), never what other closers left: killed, it would recover, but slower.
	postgresStopBudget = 5 * time.Second
)

// MaxShutdown is the longest a stop takes, from the signal to the return of Run, with the given
// grace and drain delay: the servers take calls for the delay (reporting NOT_SERVING), then
// drain within the grace, the NATS endpoints by its end or natsDrainFloor
// after the servers, whichever is later; the relays' last round follows
// (outbox.DefaultFinalFlush), then closing (closeBudget, and postgresStopBudget for the private
// Postgres). An orchestrator's kill timeout (Kubernetes' terminationGracePeriodSeconds) must
// exceed it, or a stop is cut short by SIGKILL: nothing is lost then, but what was in flight is
// retried instead of finished. A loop told to stop in the middle of a round records its
// outcomes within the relays' last round (rounds.LastWrite).
func MaxShutdown(grace, drainDelay time.Duration) time.Duration {
	return drainDelay + grace + natsDrainFloor + outbox.DefaultFinalFlush + closeBudget + postgresStopBudget
}

func (s *system) closeAll() {
	ctx, cancel := context.WithTimeout(context.Background(), closeBudget)
	defer cancel()
	for i := len(s.closers) - 1; i >= 0; i-- {
		c := s.closers[i]
		cctx, cancel := ctx, context.CancelFunc(func() {})
		if c.budget > 0 {
			cctx, cancel = context.WithTimeout(context.Background(), c.budget)
		}
		err := closeWithin(cctx, c.close)
		cancel()
		if err != nil {
			s.log.Warn("shutdown step failed", "err", err)
		}
	}
}

func (s *system) start(ctx context.Context) error {
	// First, so that every part built after it is traced when an OTLP endpoint is configured;
	// its flush is the last thing a stop does.
	stopTracing, err := tracing.Start(ctx, "handoff-"+s.cfg.Target)
	if err != nil {
		return err
	}
	s.onClose(stopTracing) // spans are best effort: within what closing has left
	if s.cfg.Target == TargetAll {
		release, err := lockDataDir(s.cfg.DataDir)
		if err != nil {
			return err
		}
		s.onClose(func(context.Context) error { release(); return nil })
	}
	keys, err := LoadKeys(s.cfg)
	if err != nil {
		return err
	}
	if len(s.cfg.IdentityProvider.JWKSURLs) > 0 {
		idp := s.cfg.IdentityProvider
		if idp.Logger == nil {
			idp.Logger = s.log
		}
		// The key set's refreshes end with the process, not with a start that is cut short.
		refreshes, stop := context.WithCancel(context.WithoutCancel(ctx))
		s.onClose(func(context.Context) error { stop(); return nil })
		if err := keys.TrustProvider(refreshes, idp); err != nil {
			return err
		}
	}
	s.keys, s.ready.Keys = keys, keys
	if s.cfg.runs(TargetFulfilment) {
		if s.cfg.pickupSecret, err = loadSecret(s.cfg.PickupCodeSecret, s.cfg.DataDir, "dev-pickup-code.key"); err != nil {
			return fmt.Errorf("pickup code secret: %w", err)
		}
	}
	if s.cfg.Target != TargetGateway {
		if err := s.startNATS(ctx); err != nil {
			return err
		}
	}
	if s.cfg.Target == TargetAll {
		s.inproc = map[string]*grpcserver.Channel{}
	}
	if s.cfg.Target != TargetGateway {
		if err := s.startPostgres(ctx); err != nil {
			return err
		}
		if s.cfg.NATSURL == "" {
			if err := s.claimDatabases(ctx); err != nil {
				return err
			}
		}
	}
	for _, spec := range services() {
		if !s.cfg.runs(spec.name) {
			continue
		}
		addr, err := s.startService(ctx, spec)
		if err != nil {
			return fmt.Errorf("%s: %w", spec.name, err)
		}
		if s.ready.ServiceAddrs == nil {
			s.ready.ServiceAddrs = map[string]string{}
		}
		s.ready.ServiceAddrs[spec.name] = addr
	}
	if s.cfg.runs(TargetGateway) {
		if err := s.startGateway(); err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
	}
	if s.cfg.runs(TargetPOSAdapter) {
		if err := s.startPOSAdapter(ctx); err != nil {
			return fmt.Errorf("pos-adapter: %w", err)
		}
	}
	if s.cfg.Target != TargetGateway {
		// Every part that consumes reports how far behind the durable consumers are.
		if err := s.reportBacklog(backlog.NewConsumers(s.js, []string{streams.EventsStream, streams.TicketsStream}, s.log)); err != nil {
			return err
		}
	}
	return s.startMetrics()
}

// serve runs every server and loop until ctx ends or one fails. Every listener is bound before
// this, so the ready line is printed only when every address accepts connections.
func (s *system) serve(ctx context.Context, ready func(Ready)) error {
	g, gctx := errgroup.WithContext(ctx)
	// On shutdown, first the servers drain (the edges and gRPC APIs), then the services' NATS
	// endpoints, callers before callees (see drainNATS), and only then the background loops
	// (outbox relays above all): what the requests finishing in the grace write, the relays
	// still publish in their last flush (outbox.RelayConfig.FinalFlush), instead of it waiting
	// in the outbox for the next start. Work a loop would do through an endpoint drained by
	// then (fulfilment's hold effects, which call inventory) stays in its table for the next
	// start or another copy. On a failure the loops stop at once.
	loopCtx, stopLoops := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLoops()
	defer context.AfterFunc(gctx, func() {
		if ctx.Err() == nil {
			stopLoops() // a failure, not a shutdown
		}
	})()
	// The servers stop DrainDelay after a shutdown begins, reporting NOT_SERVING meanwhile; on a
	// failure at once.
	serveCtx, stopServing := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServing()
	defer context.AfterFunc(gctx, func() {
		if ctx.Err() == nil || s.cfg.DrainDelay <= 0 {
			stopServing()
			return
		}
		s.readiness.setStopping()
		s.log.Info("stopping: health NOT_SERVING, calls still taken until the drain", "drain_delay", s.cfg.DrainDelay)
		time.AfterFunc(s.cfg.DrainDelay, stopServing)
	})()
	var serving sync.WaitGroup
	for _, run := range s.servers {
		serving.Add(1)
		g.Go(func() error { defer serving.Done(); return run(serveCtx) })
	}
	g.Go(func() error {
		<-serveCtx.Done()
		// The servers drain within the grace from now; the NATS endpoints by its end, or
		// natsDrainFloor after the servers if that is later (see MaxShutdown).
		stopped := time.Now()
		serving.Wait()
		by := stopped.Add(s.cfg.ShutdownGrace)
		if floor := time.Now().Add(s.natsDrainFloor()); floor.After(by) {
			by = floor
		}
		drainCtx, cancel := context.WithDeadline(context.WithoutCancel(ctx), by)
		defer cancel()
		s.drainNATS(drainCtx)
		stopLoops()
		return nil
	})
	for _, run := range s.loops {
		g.Go(func() error { return run(loopCtx) })
	}
	g.Go(func() error {
		for _, f := range s.afterListen {
			if err := f(gctx); err != nil {
				return err
			}
		}
		s.readiness.setStarting(false)
		r := s.ready
		s.log.Info("Handoff is ready", "target", s.cfg.Target, "gateway", r.GatewayAddr, "pos_adapter", r.POSAdapterAddr,
			"metrics", r.MetricsAddr, "nats", RedactURL(r.NATSURL))
		if ready != nil {
			ready(r)
		}
		return nil
	})
	err := g.Wait()
	s.log.Info("Handoff is stopping")
	if err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// listen binds addr now, so that addresses are known (port 0 resolved) before anything serves.
// setting names where addr comes from, for the error a taken port gives.
func (s *system) listen(addr, setting string) (net.Listener, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w (another Handoff running? set %s)", addr, err, setting)
	}
	s.onClose(func(context.Context) error { lis.Close(); return nil })
	return lis, nil
}

// addServer registers a long-running server or loop; run returns when ctx ends.
func (s *system) addServer(run func(ctx context.Context) error) { s.servers = append(s.servers, run) }

// addLoop registers a background loop; an error other than shutdown stops the process.
func (s *system) addLoop(name string, run func(ctx context.Context) error) {
	s.loops = append(s.loops, func(ctx context.Context) error {
		if err := run(ctx); err != nil && ctx.Err() == nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	})
}

func (s *system) databaseURLFor(service string) string {
	if u := s.cfg.ServiceDatabaseURLs[service]; u != "" {
		return u
	}
	return s.databaseURL
}

// LoadKeys returns the configured token key set, or the development key of the all target.
func LoadKeys(cfg Config) (*auth.KeySet, error) {
	if cfg.JWTKeys != "" {
		ks, err := auth.ParseKeySet(cfg.JWTKeys)
		if err != nil {
			return nil, fmt.Errorf("HANDOFF_JWT_KEYS: %w", err)
		}
		return ks, nil
	}
	ks, err := auth.DevKeySet(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("development token key: %w", err)
	}
	return ks, nil
}

// ClientKeys is LoadKeys for tools that mint tokens for a running system (handoff token,
// mobile-mock): without configured keys they read the development key the system made in its
// data dir, and fail where there is none rather than make one it would not know.
func ClientKeys(jwtKeys, dataDir string) (*auth.KeySet, error) {
	if jwtKeys != "" {
		return LoadKeys(Config{JWTKeys: jwtKeys})
	}
	ks, err := auth.ExistingDevKeySet(dataDir)
	if err != nil {
		return nil, fmt.Errorf("development token key: %w", err)
	}
	return ks, nil
}

// loadSecret returns the configured secret, or a development secret kept in dir/name (made on
// first use) for the one-process mode.
func loadSecret(configured, dir, name string) ([]byte, error) {
	if configured != "" {
		if len(configured) < 16 {
			return nil, fmt.Errorf("want at least 16 bytes, got %d", len(configured))
		}
		return []byte(configured), nil
	}
	path := filepath.Join(dir, name)
	b, err := os.ReadFile(path)
	if err == nil && len(b) >= 16 {
		return b, nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	b = make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return b, nil
}

// roundRobin spreads an edge's calls over every address its service's name resolves to (a
// headless Kubernetes Service, a scaled compose service), and moves them off a copy that is
// gone; gRPC's default would send every call down one connection to one copy. Each copy's
// health (grpc.health.v1, the server as a whole) is watched, and a copy saying NOT_SERVING
// (its database or NATS down, or shutting down) takes no calls until it says SERVING again:
// readiness alone would only change what the name resolves to, which an edge holding its
// connections looks up again only when one ages out. With every copy NOT_SERVING, calls fail
// at once as Unavailable, reads a copy could still have answered included, as behind a
// readiness-driven load balancer (a headless Service resolves to ready copies only).
const roundRobin = `{"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}`

// dialBackoff is how an edge tries a service's address again while it is down: gRPC's own
// default grows to 2 minutes, so an edge kept failing calls for as long after a service that
// had been down a while was back (a restart, a deploy). Capped at 2 s, a service is reached
// again within about 2 s of answering; the attempts cost one connection each.
var dialBackoff = backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second}

// dialKeepalive has an edge ping each copy of a service it has a connection to, and give the
// connection up when a ping goes unanswered: a copy that hangs with its socket open (a stuck
// process, a paused VM) would otherwise keep every stream through it (a shopper's WatchOrder)
// open and silent until its token expired, and take its share of calls to wait out their
// deadlines. Calls and streams on it fail as Unavailable, and the edge moves on to the other
// copies. The services permit pings this often (grpcserver's enforcement policy).
var dialKeepalive = keepalive.ClientParameters{Time: 20 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}

// dial connects to a service's gRPC API: in the one-process mode in process (the same
// handlers and interceptors, without loopback HTTP/2), else at its configured address, over
// every copy it names (roundRobin). Connections are lazy; a service that is down gives
// Unavailable.
func (s *system) dial(name, configured string) (grpc.ClientConnInterface, error) {
	if ch, ok := s.inproc[name]; ok {
		return ch, nil
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(roundRobin), grpc.WithKeepaliveParams(dialKeepalive),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: dialBackoff, MinConnectTimeout: 5 * time.Second})}
	if tracing.Enabled() {
		// The calls' trace context goes in their metadata to the other process.
		unary, stream := tracing.ClientInterceptors()
		opts = append(opts, grpc.WithChainUnaryInterceptor(unary), grpc.WithChainStreamInterceptor(stream))
	}
	conn, err := grpc.NewClient(configured, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s at %s: %w", name, configured, err)
	}
	s.onClose(func(context.Context) error { return conn.Close() })
	return conn, nil
}

func (s *system) startGateway() error {
	var conns [4]grpc.ClientConnInterface
	for i, svc := range []struct{ name, addr string }{
		{TargetCatalog, s.cfg.CatalogAddr}, {TargetInventory, s.cfg.InventoryAddr},
		{TargetCart, s.cfg.CartAddr}, {TargetFulfilment, s.cfg.FulfilmentAddr},
	} {
		conn, err := s.dial(svc.name, svc.addr)
		if err != nil {
			return err
		}
		conns[i] = conn
	}
	gw, err := gateway.New(gateway.Config{
		Catalog: conns[0], Inventory: conns[1], Cart: conns[2], Fulfilment: conns[3],
		Keys: s.keys, RateLimits: s.cfg.RateLimits, AllowedOrigins: s.cfg.AllowedOrigins, TrustedProxies: s.cfg.TrustedProxies, Logger: s.log,
	})
	if err != nil {
		return err
	}
	lis, err := s.listen(s.cfg.GatewayAddr, "HANDOFF_GATEWAY_ADDR")
	if err != nil {
		return err
	}
	s.ready.GatewayAddr = lis.Addr().String()
	s.readiness.add(gw)
	s.addServer(func(ctx context.Context) error { return gw.Serve(ctx, lis, s.cfg.ShutdownGrace) })
	return nil
}

func (s *system) startMetrics() error {
	if s.cfg.MetricsAddr == "" {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.Handler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	lis, err := s.listen(s.cfg.MetricsAddr, "HANDOFF_METRICS_ADDR (or off)")
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	s.ready.MetricsAddr = lis.Addr().String()
	s.addServer(func(ctx context.Context) error { return edge.ServeHTTP(ctx, lis, mux, time.Second, s.log, nil) })
	return nil
}

// chain is the demo data, loaded by each service into its own empty schema.
func (s *system) chain() demo.Chain {
	c := demo.Seattle()
	if s.cfg.DemoTimeZone != "" {
		c = c.InTimeZone(s.cfg.DemoTimeZone)
	}
	return c
}

func dataPath(dir, name string) string { return filepath.Join(dir, name) }

// ensureStreams declares the JetStream topology (idempotent, safe from two processes at once),
// waiting, as for a server that does not answer, while a JetStream cluster is still forming:
// parts started beside their NATS cluster (compose, a rollout) meet it before it has elected
// a leader or before all its nodes have joined.
func (s *system) ensureStreams(ctx context.Context) error {
	return s.untilAnswered(ctx, "JetStream (a NATS cluster still forming?)", func() (bool, error) {
		err := streams.Ensure(ctx, s.js, streams.Config{Replicas: s.cfg.StreamReplicas, Logger: s.log})
		return jetStreamForming(err), err
	})
}

// jetStreamForming reports whether err is what a JetStream cluster answers while it forms: no
// answer (no meta leader yet to take the request), unavailable (503), or too few peers joined
// for the replicas asked (10005).
func jetStreamForming(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) {
		return true
	}
	if api, ok := errors.AsType[*jetstream.APIError](err); ok {
		return api.Code == 503 || api.ErrorCode == jsNoSuitablePeers
	}
	return false
}

// jsNoSuitablePeers is JetStream's "insufficient resources / no suitable peers for placement".
const jsNoSuitablePeers jetstream.ErrorCode = 10005
