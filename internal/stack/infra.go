package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/mod/semver"

	"github.com/handoff-dev/handoff/internal/pgcluster"
)

// databaseName is the database the one-process mode keeps every schema in.
const databaseName = "handoff"

// startNATS embeds a NATS server (one-process mode without NATS_URL) and connects to NATS.
func (s *system) startNATS(ctx context.Context) error {
	url := s.cfg.NATSURL
	opts := []nats.Option{nats.Name("handoff-" + s.cfg.Target)}
	if url == "" {
		ns, err := s.embedNATS()
		if err != nil {
			return err
		}
		url = ns.ClientURL()
		// The services reach the server in this process through memory, not loopback TCP:
		// every request, reply and event then skips the socket system calls (about 5% of a checkout's
		// CPU, measured with BenchmarkCheckout). Other processes still connect on url.
		opts = append(opts, nats.InProcessServer(ns))
	}
	nc, err := s.connectNATS(ctx, url, append(opts,
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: closed on purpose (shutting down), not an outage
				s.log.Warn("NATS disconnected", "err", err)
				s.natsDown(err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			s.log.Info("NATS reconnected", "url", c.ConnectedUrlRedacted())
			s.natsBack()
		}),
	)...)
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w (start nats-server with -js, or leave NATS_URL empty with the all target)", RedactURL(url), err)
	}
	s.onClose(func(ctx context.Context) error { return drainConn(ctx, nc) })
	if err := checkNATSVersion(nc.ConnectedServerVersion()); err != nil {
		return fmt.Errorf("NATS at %s: %w", RedactURL(url), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("JetStream context: %w", err)
	}
	s.nc, s.js = nc, js
	s.ready.NATSURL = url
	if err := s.ensureStreams(ctx); err != nil {
		return fmt.Errorf("declare JetStream streams with %d replicas (HANDOFF_STREAM_REPLICAS; more than 1 needs a NATS cluster): %w", s.cfg.StreamReplicas, err)
	}
	s.addLoop("JetStream streams check", s.watchStreams)
	return nil
}

// minNATSVersion is the oldest nats-server Handoff runs on: its durable consumers filter on
// several subjects at once (2.10). Atomic batches (2.12) are used only where the server has them.
const minNATSVersion = "2.10.0"

// checkNATSVersion refuses a server older than minNATSVersion at start, naming both, rather
// than letting a part come up and fail at its first consumer (or, worse, get a consumer with
// its filters dropped: an older server ignores what it does not know).
func checkNATSVersion(version string) error {
	v := "v" + version
	if semver.IsValid(v) && semver.Compare(v, "v"+minNATSVersion) < 0 {
		return fmt.Errorf("nats-server %s is too old: Handoff needs %s or later (JetStream consumers with several filter subjects); upgrade it, or leave NATS_URL empty with the all target to use the embedded server", version, minNATSVersion)
	}
	return nil
}

// embedNATS starts nats-server in-process with JetStream on disk under DataDir. It syncs every
// write to disk before acknowledging (SyncAlways): JetStream's default flushes periodically and
// can lose acknowledged messages on a power cut, and Handoff never loses an order event.
func (s *system) embedNATS() (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(s.cfg.EmbeddedNATSAddr)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS address %q: %w", s.cfg.EmbeddedNATSAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	} else if lis, err := net.Listen("tcp", s.cfg.EmbeddedNATSAddr); err != nil {
		// Fail fast and say what to do, instead of waiting for the server to give up.
		return nil, fmt.Errorf("embedded NATS cannot listen on %s: %w (another Handoff running? set HANDOFF_EMBEDDED_NATS_ADDR)", s.cfg.EmbeddedNATSAddr, err)
	} else {
		lis.Close()
	}
	opts := &server.Options{
		ServerName: "handoff-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   dataPath(s.cfg.DataDir, "nats"),
		SyncAlways: true,
		NoSigs:     true, // signals belong to our process, not the embedded server
		MaxPayload: 4 << 20,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("configure embedded NATS: %w", err)
	}
	ns.SetLoggerV2(natsLogger{s.log.With("component", "nats-server")}, false, false, false)
	go ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded NATS did not start on %s (is the port taken? set HANDOFF_EMBEDDED_NATS_ADDR)", s.cfg.EmbeddedNATSAddr)
	}
	s.onClose(func(context.Context) error {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil
	})
	s.log.Info("embedded NATS started", "url", ns.ClientURL(), "store_dir", opts.StoreDir)
	return ns, nil
}

// startPostgres starts the private cluster when some part to run has no database URL (the
// one-process mode without DATABASE_URL): never for a part given its own.
func (s *system) startPostgres(ctx context.Context) error {
	s.databaseURL = s.cfg.DatabaseURL
	for _, spec := range services() {
		if u := s.cfg.ServiceDatabaseURLs[spec.name]; u != "" && s.cfg.runs(spec.name) {
			if err := s.waitForPostgres(ctx, u); err != nil {
				return err
			}
		}
	}
	if u := s.cfg.ServiceDatabaseURLs[TargetPOSAdapter]; u != "" && s.cfg.runs(TargetPOSAdapter) {
		if err := s.waitForPostgres(ctx, u); err != nil {
			return err
		}
	}
	if s.databaseURL != "" {
		s.ready.DatabaseURL = s.databaseURL
		return s.waitForPostgres(ctx, s.databaseURL)
	}
	needed := false
	for _, spec := range services() {
		needed = needed || s.cfg.runs(spec.name) && s.cfg.ServiceDatabaseURLs[spec.name] == ""
	}
	if s.cfg.runs(TargetPOSAdapter) && s.cfg.ServiceDatabaseURLs[TargetPOSAdapter] == "" {
		needed = true
	}
	if !needed {
		return nil
	}
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{
		DataDir: dataPath(s.cfg.DataDir, "postgres"),
		Port:    s.cfg.PostgresPort,
		Logger:  s.log,
	})
	if errors.Is(err, pgcluster.ErrPortInUse) {
		return fmt.Errorf("start private PostgreSQL: port %d is taken: set -postgres-port / HANDOFF_POSTGRES_PORT to a free port, or 0 for any free one (or set DATABASE_URL): %w",
			s.cfg.PostgresPort, err)
	}
	if err != nil {
		return fmt.Errorf("start private PostgreSQL (or set DATABASE_URL): %w", err)
	}
	// Its own budget, not what the closers before it left (see postgresStopBudget).
	s.onCloseWithin(postgresStopBudget, cluster.Stop)
	// A server that dies under a running Handoff (killed, out of memory) takes every call with
	// it: Handoff stops with an error, to be started again (by its supervisor), rather than
	// run on reporting itself healthy. On shutdown the loops end before the server is stopped.
	s.addLoop("private PostgreSQL", func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return nil
		case <-cluster.Done():
			return errors.New("the server exited under Handoff; start Handoff again")
		}
	})
	if err := createDatabase(ctx, cluster.URL("postgres"), databaseName); err != nil {
		return err
	}
	s.databaseURL = cluster.URL(databaseName)
	s.ready.DatabaseURL = s.databaseURL
	s.log.Info("private PostgreSQL started", "url", s.databaseURL)
	return nil
}

// createDatabase creates name on the server at adminURL unless it exists.
func createDatabase(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return fmt.Errorf("look for database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr interface{ SQLState() string }
	if errors.As(err, &pgErr) && pgErr.SQLState() == "42P04" { // created meanwhile by another process
		return nil
	}
	if err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// drainConn drains nc on shutdown, so that in-flight requests and acks finish before the
// connection closes, and closes it when ctx ends first: the client's own drain timeout (30 s)
// would otherwise hold the stop past MaxShutdown behind a handler that does not return.
func drainConn(ctx context.Context, nc *nats.Conn) error {
	if err := nc.Drain(); err != nil {
		nc.Close()
		return fmt.Errorf("drain NATS connection: %w", err)
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for nc.IsDraining() {
		select {
		case <-ctx.Done():
			nc.Close()
			return fmt.Errorf("drain NATS connection: %w", context.Cause(ctx))
		case <-tick.C:
		}
	}
	return nil
}
