// Package streams owns Handoff's JetStream topology: which streams exist, which
// subjects they capture, how long they keep messages, and the helpers that
// build those subjects. Every process declares the topology at start with
// [Ensure]; declaring is idempotent, so any number of copies may start at once.
//
// Subjects:
//
//	handoff.<service>.<entity>.<event>       domain events   → stream HANDOFF_EVENTS
//	handoff.store.<store_id>.ticket.<kind>   per-store POS feed → stream HANDOFF_TICKETS
//	handoff.rpc.<service>.<method>           request/reply (package natsrpc) → no stream, ever
//
// Request/reply subjects must never be captured by a stream: a stream listening
// on a request subject would answer every request with a publish
// acknowledgement, which the caller would take for the reply. [Ensure] refuses
// a topology that would do so.
//
// Durability note: a stream's file storage only protects an acknowledged
// message once the server has synced it to disk. Handoff's embedded server and
// its recommended production configuration sync before acknowledging
// (server option sync_interval: always); that is a server setting, not a
// stream setting, so it lives with the server configuration, not here.
package streams

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream names.
const (
	// EventsStream holds every domain event of every service.
	EventsStream = "HANDOFF_EVENTS"
	// TicketsStream holds the per-store POS ticket feed.
	TicketsStream = "HANDOFF_TICKETS"
)

// RPCSubjects is the subject space of request/reply (see package natsrpc). It
// is declared here too so that Ensure can prove no stream captures it.
const RPCSubjects = "handoff.rpc.>"

const (
	// DuplicateWindow is how long JetStream remembers a Nats-Msg-Id and drops a
	// second publish with the same id. The outbox relay republishes after a
	// crash within seconds, well inside this window.
	DuplicateWindow = 2 * time.Minute
	// MaxAge is how long events stay in the streams. Postgres is the truth, so
	// a consumer that is away for longer rebuilds from the owning service.
	MaxAge = 7 * 24 * time.Hour
)

// Config tunes the topology for a deployment.
type Config struct {
	// Replicas per stream: 1 for a laptop or a single server, 3 in a
	// production cluster. Zero means 1.
	Replicas int
	// Logger receives one line per declared stream. Nil discards.
	Logger *slog.Logger
}

// EventSubject returns the subject of a domain event,
// handoff.<service>.<entity>.<event>, e.g. handoff.fulfilment.order.confirmed.
// Tokens must be non-empty and contain no '.', '*', '>' or whitespace; the
// outbox rejects a subject that breaks this rule.
func EventSubject(service, entity, event string) string {
	return "handoff." + service + "." + entity + "." + event
}

// TicketSubject returns the subject of a POS ticket for one store,
// handoff.store.<store_id>.ticket.<kind>, e.g. handoff.store.42.ticket.new.
func TicketSubject(storeID, kind string) string {
	return "handoff.store." + storeID + ".ticket." + kind
}

// StoreTicketsFilter returns the filter that selects every ticket of one
// store, for a per-store consumer.
func StoreTicketsFilter(storeID string) string {
	return "handoff.store." + storeID + ".ticket.>"
}

// Topology returns the stream configurations Ensure declares. Exposed so that
// tools and tests can inspect exactly what will be created.
func Topology(cfg Config) []jetstream.StreamConfig {
	replicas := cfg.Replicas
	if replicas <= 0 {
		replicas = 1
	}
	return []jetstream.StreamConfig{
		{
			Name:        EventsStream,
			Description: "Handoff domain events, handoff.<service>.<entity>.<event>",
			Subjects: []string{
				"handoff.catalog.>",
				"handoff.inventory.>",
				"handoff.cart.>",
				"handoff.fulfilment.>",
				"handoff.pos.>",
			},
			Retention:  jetstream.LimitsPolicy,
			Discard:    jetstream.DiscardOld,
			Storage:    jetstream.FileStorage,
			Duplicates: DuplicateWindow,
			MaxAge:     MaxAge,
			Replicas:   replicas,
			// Lets the outbox relay publish a round's events as one atomic batch: with
			// sync_interval always the server then syncs once per batch, not once per event.
			// Servers before 2.12 ignore it, and the relay falls back to one by one.
			AllowAtomicPublish: true,
		},
		{
			Name:        TicketsStream,
			Description: "Handoff POS ticket feed, handoff.store.<store_id>.ticket.<kind>",
			Subjects:    []string{"handoff.store.*.ticket.>"},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			Storage:     jetstream.FileStorage,
			Duplicates:  DuplicateWindow,
			MaxAge:      MaxAge,
			Replicas:    replicas,
			// See the events stream.
			AllowAtomicPublish: true,
		},
	}
}

// Ensure creates the streams, or updates them to the declared configuration
// (see [Merge]: an operator's limits stay, replicas never go down). It is safe
// to call from several processes at the same time: a lost create race is
// retried as an update.
func Ensure(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	topology := Topology(cfg)
	if err := checkNoRPCCapture(topology); err != nil {
		return err
	}
	for _, sc := range topology {
		replicas, err := ensureStream(ctx, js, sc, logger)
		if err != nil {
			return err
		}
		logger.InfoContext(ctx, "stream ensured", "stream", sc.Name, "subjects", sc.Subjects, "replicas", replicas)
	}
	return nil
}

// ensureStream creates or updates the stream sc declares, and says how many replicas it has.
func ensureStream(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig, logger *slog.Logger) (int, error) {
	const attempts = 3
	var err error
	for range attempts {
		var st jetstream.Stream
		st, err = js.Stream(ctx, sc.Name)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			// Another process may create it between the look and the create: then look again.
			if _, err = js.CreateStream(ctx, sc); err == nil {
				return sc.Replicas, nil
			}
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				continue
			}
		case err == nil:
			have := st.CachedInfo().Config
			want, kept := Merge(have, sc)
			if kept != "" {
				logger.WarnContext(ctx, "stream left as it is in part", "stream", sc.Name, "kept", kept)
			}
			if reflect.DeepEqual(have, want) {
				return want.Replicas, nil
			}
			if _, err = js.UpdateStream(ctx, want); err == nil {
				return want.Replicas, nil
			}
		}
		break
	}
	return 0, fmt.Errorf("streams: ensure stream %s: %w", sc.Name, err)
}

// Merge returns the configuration to give a stream that exists as have, of which Handoff
// declares want. Handoff sets what its delivery rests on (subjects, retention, duplicate
// window, age, atomic batches); the rest is the operator's and kept: limits such as MaxBytes,
// placement, compression, and what the stream does when such a limit is reached (the discard
// policy: an operator's DiscardNew refuses new events, which the outbox keeps and alerts on,
// rather than deleting events no consumer has read yet; it goes with the limits it applies
// to, and DiscardNewPerSubject requires it). Replicas never go down: a process started
// without the cluster's setting (a one-off run by hand, a forgotten variable) would otherwise
// turn an R3 stream into R1, which keeps no copy of anything; lowering them is left to the
// operator. kept says what of want was not applied, for the log.
func Merge(have, want jetstream.StreamConfig) (merged jetstream.StreamConfig, kept string) {
	merged = have
	merged.Description = want.Description
	merged.Subjects = want.Subjects
	merged.Retention = want.Retention
	merged.Storage = want.Storage
	merged.Duplicates = want.Duplicates
	merged.MaxAge = want.MaxAge
	merged.AllowAtomicPublish = want.AllowAtomicPublish
	if want.Replicas >= have.Replicas {
		merged.Replicas = want.Replicas
	} else {
		kept = fmt.Sprintf("replicas %d, not the %d declared here: lower them deliberately (nats stream edit) if meant", have.Replicas, want.Replicas)
	}
	return merged, kept
}

// Capturing returns the stream that stores messages published on the concrete
// subject, or "" if none does. The outbox uses it to refuse, at write time, an
// event nobody would store.
func Capturing(subject string) string {
	for _, sc := range Topology(Config{}) {
		for _, pattern := range sc.Subjects {
			if SubjectsOverlap(subject, pattern) {
				return sc.Name
			}
		}
	}
	return ""
}

func checkNoRPCCapture(topology []jetstream.StreamConfig) error {
	for _, sc := range topology {
		for _, subj := range sc.Subjects {
			if SubjectsOverlap(subj, RPCSubjects) {
				return fmt.Errorf("streams: stream %s subject %q would capture request/reply subjects %s", sc.Name, subj, RPCSubjects)
			}
		}
	}
	return nil
}

// SubjectsOverlap reports whether some concrete subject matches both
// patterns (NATS wildcards '*' = one token, '>' = one or more trailing tokens).
func SubjectsOverlap(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; ; i++ {
		switch {
		case i == len(at) && i == len(bt):
			return true
		case i == len(at) || i == len(bt):
			// One pattern is longer and the shorter one ended without '>'.
			return false
		}
		x, y := at[i], bt[i]
		if x == ">" || y == ">" {
			return true
		}
		if x != "*" && y != "*" && x != y {
			return false
		}
	}
}
