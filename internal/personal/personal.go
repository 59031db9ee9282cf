// Package personal clears a shopper's personal data from the copies of an order that services
// keep as protobuf (an event waiting in an outbox, a POS ticket, an escalation timer), for an
// erasure request (fulfilment's ForgetCustomer). The business record (lines, amounts, states
// and times) stays.
package personal

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

// ForgottenSubject is the subject of fulfilment's CustomerForgotten events.
const ForgottenSubject = "handoff.fulfilment.customer.forgotten"

// RedactOrder clears o's customer id, pickup name and note, and the id of every customer
// actor in its history, and says whether it changed anything. The Order message carries no
// email. nil is left alone.
func RedactOrder(o *fulfilmentv1.Order) bool {
	if o == nil {
		return false
	}
	changed := o.CustomerId != "" || o.PickupName != "" || o.CustomerNote != ""
	o.CustomerId, o.PickupName, o.CustomerNote = "", "", ""
	for _, tr := range o.History {
		changed = RedactActor(tr.GetActor()) || changed
	}
	return changed
}

// RedactActor clears the id of a customer actor (the shopper's customer id) and says whether
// it did. Staff, admin and system actors keep theirs.
func RedactActor(a *commonv1.Actor) bool {
	if a.GetKind() != commonv1.ActorKind_ACTOR_KIND_CUSTOMER || a.GetId() == "" {
		return false
	}
	a.Id = ""
	return true
}

// RedactOrderChanged is RedactOrder for an OrderChanged event, its transition's actor too.
func RedactOrderChanged(ev *fulfilmentv1.OrderChanged) bool {
	changed := RedactOrder(ev.GetOrder())
	return RedactActor(ev.GetTransition().GetActor()) || changed
}

// Rewrite clears personal data from protobuf copies kept in a table: read (with readArgs)
// yields rows of a key and a payload, which the statement locks (FOR UPDATE); each payload is
// decoded into newMsg(), given to redact, and, where redact changed it, written back with write,
// whose parameters are the key ($1), the new payload ($2) and writeArgs ($3 on), all in one
// round trip. what names the copies in errors. It returns how many it rewrote.
func Rewrite[K any, M proto.Message](ctx context.Context, tx pgx.Tx, what, read string, readArgs []any, write string, writeArgs []any,
	newMsg func() M, redact func(M) bool) (int, error) {
	type kept struct {
		key     K
		payload []byte
	}
	rows, err := tx.Query(ctx, read, readArgs...)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", what, err)
	}
	copies, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (kept, error) {
		var k kept
		return k, r.Scan(&k.key, &k.payload)
	})
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", what, err)
	}
	var b pgx.Batch
	for _, c := range copies {
		m := newMsg()
		if err := proto.Unmarshal(c.payload, m); err != nil {
			return 0, fmt.Errorf("decode %s %v: %w", what, c.key, err)
		}
		if !redact(m) {
			continue
		}
		payload, err := proto.Marshal(m)
		if err != nil {
			return 0, fmt.Errorf("encode %s %v: %w", what, c.key, err)
		}
		b.Queue(write, append([]any{c.key, payload}, writeArgs...)...)
	}
	if b.Len() == 0 {
		return 0, nil
	}
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return 0, fmt.Errorf("rewrite %s: %w", what, err)
	}
	return b.Len(), nil
}
