package checkout_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/testenv"
)

// statementCounter counts the SQL statements sent through a pool (BEGIN and COMMIT included).
type statementCounter struct{ n atomic.Int64 }

func (c *statementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (c *statementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// take returns the count since the last take.
func (c *statementCounter) take() int { return int(c.n.Swap(0)) }

// countedPool is a pool like base (same database, same schema) whose statements e.statements
// counts.
func (e *env) countedPool(base *pgxpool.Pool) *pgxpool.Pool {
	e.t.Helper()
	e.statements = &statementCounter{}
	cfg := base.Config()
	cfg.ConnConfig.Tracer = e.statements
	pool, err := pgxpool.NewWithConfig(e.t.Context(), cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(pool.Close)
	return pool
}

// requestSpy sees every NATS request one connection sends: it listens on the request/reply
// subjects and keeps those whose reply goes to that connection's inboxes.
type requestSpy struct {
	t      testing.TB
	spy    *nats.Conn
	sub    *nats.Subscription
	prefix string
}

const spiedInboxPrefix = "_INBOX_CART_UNDER_TEST"

// spiedConn is a NATS connection for the cart whose requests e.spyRequests can see.
func (e *env) spiedConn() *nats.Conn {
	e.t.Helper()
	nc, err := nats.Connect(e.nats.ClientURL(), nats.Name("cart under test"), nats.CustomInboxPrefix(spiedInboxPrefix))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	e.cartConn = nc
	return nc
}

// spyRequests starts seeing the cart's NATS requests. Only tests that count them should: the
// spy's subscription is interest in every request subject, so a request nobody serves waits
// for its timeout instead of failing at once with "no responders".
func (e *env) spyRequests() *requestSpy {
	e.t.Helper()
	spy := testenv.NATSConn(e.t, e.nats)
	sub, err := spy.SubscribeSync(natsrpc.SubjectPrefix + ".>")
	if err != nil {
		e.t.Fatal(err)
	}
	// Before the connection drains, which would otherwise wait for unread requests.
	e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := spy.Flush(); err != nil {
		e.t.Fatal(err)
	}
	return &requestSpy{t: e.t, spy: spy, sub: sub, prefix: spiedInboxPrefix + "."}
}

// take returns the subjects the cart asked since the last take.
func (r *requestSpy) take() []string {
	// Once the spy's PING is answered, the server has handed it every request it routed
	// before, and each of the cart's requests was routed before the cart got its reply.
	r.t.Helper()
	if err := r.spy.Flush(); err != nil {
		r.t.Fatalf("flush the request spy: %v", err)
	}
	var out []string
	for {
		m, err := r.sub.NextMsg(5 * time.Millisecond)
		if err != nil {
			break
		}
		if strings.HasPrefix(m.Reply, r.prefix) {
			out = append(out, strings.TrimPrefix(m.Subject, natsrpc.SubjectPrefix+"."))
		}
	}
	return out
}
