package inventory

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// Hold changes of many orders in one transaction (change_holds): fulfilment's effects worker
// sends every release, commit and extension of one round at once, so N orders collected or
// cancelled together cost one request and one transaction of two round trips (BEGIN with the
// locks, then the writes with COMMIT) instead of N of each. Each change keeps the rules of its
// single-order request: only open holds change, so doing one again changes nothing, and every
// hold ends once, with its ledger row and its event.

// maxHoldChanges bounds one change_holds request.
const maxHoldChanges = 256

type changeKind int

const (
	changeRelease changeKind = iota + 1
	changeCommit
	changeExtend
)

// holdChange is a validated HoldChange.
type holdChange struct {
	kind    changeKind
	orderID string
	lineID  string // release: only this line's hold
	reason  inventoryv1.ReleaseReason
	expire  time.Time // extend: the new deadline
	// handedOver is when a commit's order was handed over (nil: not said, now).
	handedOver *time.Time
}

func checkRelease(v *rpcerr.Violations, prefix, orderID, lineID string, reason inventoryv1.ReleaseReason) {
	checkText(v, prefix+"order_id", orderID, maxIDLen, true)
	checkText(v, prefix+"line_id", lineID, maxIDLen, false)
	if _, ok := inventoryv1.ReleaseReason_name[int32(reason)]; !ok {
		v.Addf(prefix+"reason", "unknown release reason %d", reason)
	}
}

// checkCommit reads a commit (field names prefixed with prefix).
func checkCommit(v *rpcerr.Violations, prefix string, c *inventoryv1.CommitHoldsRequest, now time.Time) holdChange {
	hc := holdChange{kind: changeCommit, orderID: c.GetOrderId()}
	checkText(v, prefix+"order_id", hc.orderID, maxIDLen, true)
	hc.handedOver = handOverTime(checkOccurTime(v, prefix+"occur_time", c.GetOccurTime(), now), now)
	return hc
}

// validateHoldChange reads change i of a request (field names prefixed with prefix).
func validateHoldChange(c *inventoryv1.HoldChange, prefix string, now time.Time) (holdChange, error) {
	var v rpcerr.Violations
	var hc holdChange
	switch ch := c.GetChange().(type) {
	case *inventoryv1.HoldChange_Release:
		r := ch.Release
		hc = holdChange{kind: changeRelease, orderID: r.GetOrderId(), lineID: r.GetLineId(), reason: r.GetReason()}
		checkRelease(&v, prefix+"release.", hc.orderID, hc.lineID, hc.reason)
	case *inventoryv1.HoldChange_Commit:
		hc = checkCommit(&v, prefix+"commit.", ch.Commit, now)
	case *inventoryv1.HoldChange_Extend:
		e := ch.Extend
		hc = holdChange{kind: changeExtend, orderID: e.GetOrderId()}
		checkText(&v, prefix+"extend.order_id", hc.orderID, maxIDLen, true)
		hc.expire = checkDeadline(&v, prefix+"extend.expire_time", e.GetExpireTime(), now, time.Time{}).Truncate(time.Microsecond)
	default:
		v.Add(prefix+"change", "one of release, commit or extend is required")
	}
	return hc, v.Err()
}

// ChangeHolds makes the hold changes of a request, in order, in one transaction. A change
// with bad input is refused in its result and the others are made; should the transaction
// fail (and not have committed with its reply lost, see pgdb.Committed), each change is tried alone,
// so that one cannot hold up the rest.
func (s *Service) ChangeHolds(ctx context.Context, req *inventoryv1.ChangeHoldsRequest) (*inventoryv1.ChangeHoldsResponse, error) {
	n := len(req.GetChanges())
	if n == 0 || n > maxHoldChanges {
		return nil, rpcerr.Invalid("changes", fmt.Sprintf("between 1 and %d changes, got %d", maxHoldChanges, n))
	}
	now := s.clock.Now()
	res := &inventoryv1.ChangeHoldsResponse{Results: make([]*inventoryv1.HoldChangeResult, n)}
	var (
		todo []holdChange
		at   []int // todo[j] is change at[j] of the request
	)
	for i, c := range req.GetChanges() {
		hc, err := validateHoldChange(c, fmt.Sprintf("changes[%d].", i), now)
		if err != nil {
			res.Results[i] = failedChange(err)
			continue
		}
		todo = append(todo, hc)
		at = append(at, i)
	}
	if len(todo) == 0 {
		return res, nil
	}
	done, err := s.changeHoldsWithRetry(ctx, todo)
	if err != nil && len(todo) > 1 && ctx.Err() == nil {
		s.log.Warn("hold changes failed together; making them one by one", "changes", len(todo), "err", err)
		for j, c := range todo {
			one, err := s.changeHoldsWithRetry(ctx, []holdChange{c})
			if err != nil {
				res.Results[at[j]] = failedChange(err)
				continue
			}
			res.Results[at[j]] = changeResult(one[0])
		}
		return res, nil
	}
	if err != nil {
		return nil, err
	}
	for j, hs := range done {
		res.Results[at[j]] = changeResult(hs)
	}
	return res, nil
}

// changeResult answers one change; a commit's holds sold late (state expired) apart.
func changeResult(hs []*hold) *inventoryv1.HoldChangeResult {
	r := &inventoryv1.HoldChangeResult{}
	for _, h := range hs {
		if h.state == holdExpired {
			r.SoldLate = append(r.SoldLate, h.proto())
		} else {
			r.Holds = append(r.Holds, h.proto())
		}
	}
	return r
}

func failedChange(err error) *inventoryv1.HoldChangeResult {
	return &inventoryv1.HoldChangeResult{ErrorCode: int32(rpcerr.Code(err)), ErrorMessage: status.Convert(err).Message()}
}

// handOverClocks is how far fulfilment's clock, which times a hand-over, may be behind
// inventory's, which times a count.
const handOverClocks = time.Minute

// handOverTime is the time a commit's goods are taken to have left the store: the hand-over's,
// as fulfilment's clock had it, plus handOverClocks (no later than now). A hand-over taken for
// earlier than it was would pass a count just after it as having seen its goods gone, and leave
// them on hand, to be promised again; taken for later, a count within the minute has them
// taken off twice, on hand too low until the next count. So only a hand-over more than a
// minute before a count counts as before it: an outage of inventory longer than that.
func handOverTime(at *time.Time, now time.Time) *time.Time {
	if at == nil {
		return nil
	}
	t := at.Add(handOverClocks)
	if n := now.Truncate(time.Microsecond); t.After(n) {
		t = n
	}
	return &t
}

// changeHoldsWithRetry runs changeHolds, again when it lost a race (a deadlock or
// serialization failure).
func (s *Service) changeHoldsWithRetry(ctx context.Context, cs []holdChange) ([][]*hold, error) {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var done [][]*hold
		if done, err = s.changeHolds(ctx, cs); err == nil || !retryable(err) {
			return done, err
		}
	}
	return nil, err
}

// The statements below that find holds by order or by id take the open state as a parameter
// ($n = holdOpen), not as the constant 'open': planned generically, a constant would let
// Postgres pick a partial index of open holds (holds_open_by_stock, the invariant check's) and
// walk all of it, filtering for the order. Entries of holds that have ended stay in those
// indexes until a vacuum, so under load such a walk read 6,000 entries, up to 6 ms a call with
// the stock rows locked. A parameter leaves only the order's and the hold's own indexes.
const (
	// lockOrderHoldsSQL locks the open holds of the orders, in (order, line) order.
	lockOrderHoldsSQL = `SELECT ` + holdColumns + ` FROM holds WHERE order_id = ANY($1) AND state = $2
		ORDER BY order_id, line_id FOR UPDATE`
	// lockOrderLevelsSQL then locks the stock rows of the holds of the orders whose holds end
	// (release, commit) in (store, SKU) order: holds first, then stock, as every transaction
	// that ends holds does. It runs after the holds are locked and sees at least their keys (a
	// hold never changes its stock row).
	lockOrderLevelsSQL = `SELECT st.store_id, st.sku, st.on_hand, st.reserved, st.safety_stock, st.version, st.count_time, st.count_short
		FROM stock st
		WHERE (st.store_id, st.sku) IN (SELECT store_id, sku FROM holds WHERE order_id = ANY($1) AND state = $2)
		ORDER BY st.store_id, st.sku
		FOR UPDATE OF st`
	// lockLateHoldsSQL locks, after the open holds, the holds of orders committed or released
	// that expired before the change came and that no change has settled since.
	lockLateHoldsSQL = `SELECT ` + holdColumns + ` FROM holds WHERE order_id = ANY($1) AND state = $2 AND NOT settled_late
		ORDER BY order_id, line_id FOR UPDATE`
	// lockOrderLevelsLateSQL is lockOrderLevelsSQL for a batch that commits or releases: the
	// stock rows of those late holds are locked too, in the same (store, SKU) turn.
	lockOrderLevelsLateSQL = `SELECT st.store_id, st.sku, st.on_hand, st.reserved, st.safety_stock, st.version, st.count_time, st.count_short
		FROM stock st
		WHERE (st.store_id, st.sku) IN (SELECT store_id, sku FROM holds
			WHERE order_id = ANY($1) AND state = $2 OR order_id = ANY($3) AND state = $4 AND NOT settled_late)
		ORDER BY st.store_id, st.sku
		FOR UPDATE OF st`
	extendHoldsByIDSQL = `UPDATE holds h SET expire_time = greatest(h.expire_time, u.expire_time)
		FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, expire_time)
		WHERE h.id = u.id AND h.state = $3`
	// extendOrderHoldsSQL extends the open holds of orders (each once in $1) and returns them.
	extendOrderHoldsSQL = `UPDATE holds h SET expire_time = greatest(h.expire_time, u.expire_time)
		FROM unnest($1::text[], $2::timestamptz[]) AS u(order_id, expire_time)
		WHERE h.order_id = u.order_id AND h.state = $3
		RETURNING h.id::text, h.order_id, h.line_id, h.store_id, h.sku, h.quantity, h.state, h.expire_time, h.store_version, h.create_time`
)

// extendOnly makes cs, when they are all extensions of distinct orders (fulfilment's round
// after its checkouts), in one statement and one round trip: an extension touches no stock and
// writes no event, so it needs neither the locks taken first nor a transaction of its own
// beyond the statement's. The update locks the rows itself, in the sorted orders' turn, as
// the other writers lock holds. ok is false for any other mix, which changeHolds makes.
func (s *Service) extendOnly(ctx context.Context, cs []holdChange) (results [][]*hold, ok bool, err error) {
	idx := make(map[string]int, len(cs))
	for i, c := range cs {
		if _, dup := idx[c.orderID]; c.kind != changeExtend || dup {
			return nil, false, nil
		}
		idx[c.orderID] = i
	}
	sorted := slices.SortedFunc(slices.Values(cs), func(a, b holdChange) int { return strings.Compare(a.orderID, b.orderID) })
	orders, times := make([]string, len(sorted)), make([]time.Time, len(sorted))
	for i, c := range sorted {
		orders[i], times[i] = c.orderID, c.expire
	}
	var b pgx.Batch
	b.Queue(keyedPlansSQL)
	b.Queue(extendOrderHoldsSQL, orders, times, holdOpen)
	br := s.db.SendBatch(ctx, &b)
	var hs []*hold
	if _, err = br.Exec(); err == nil {
		var rows pgx.Rows
		if rows, err = br.Query(); err == nil {
			hs, err = scanHolds(rows)
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, true, fmt.Errorf("extend holds: %w", err)
	}
	results = make([][]*hold, len(cs))
	for _, h := range hs {
		i := idx[h.orderID]
		results[i] = append(results[i], h)
	}
	for _, r := range results { // in line order, as the locking path returns them
		slices.SortFunc(r, func(a, b *hold) int { return strings.Compare(a.lineID, b.lineID) })
	}
	return results, true, nil
}

// changeHolds makes cs in one transaction of two round trips and returns, for each change,
// the holds it ended (release, commit) or the open holds it extended.
func (s *Service) changeHolds(ctx context.Context, cs []holdChange) ([][]*hold, error) {
	if results, ok, err := s.extendOnly(ctx, cs); ok {
		return results, err
	}
	orderIDs := make([]string, 0, len(cs))
	seen := map[string]bool{}
	// Only ending a hold changes stock; an extension must not lock stock rows, which every
	// reserve at those stores would then wait for.
	var endingIDs []string
	ending := map[string]bool{}
	for _, c := range cs {
		if !seen[c.orderID] {
			seen[c.orderID] = true
			orderIDs = append(orderIDs, c.orderID)
		}
		if c.kind != changeExtend && !ending[c.orderID] {
			ending[c.orderID] = true
			endingIDs = append(endingIDs, c.orderID)
		}
	}
	conn, release, err := pgdb.Acquire(ctx, s.db)
	if err != nil {
		return nil, fmt.Errorf("change holds: %w", err)
	}
	defer release() // nothing to write, or failed half-way: rolled back

	var b pgx.Batch
	b.Queue("BEGIN")
	b.Queue(pgdb.XactIDSQL) // to learn its fate should COMMIT's reply be lost
	b.Queue(keyedPlansSQL)
	b.Queue(lockOrderHoldsSQL, orderIDs, holdOpen)
	if len(endingIDs) > 0 {
		b.Queue(lockLateHoldsSQL, endingIDs, holdExpired)
		b.Queue(lockOrderLevelsLateSQL, endingIDs, holdOpen, endingIDs, holdExpired)
	} else {
		b.Queue(lockOrderLevelsSQL, endingIDs, holdOpen)
	}
	br := conn.SendBatch(ctx, &b)
	xid, locked, late, levels, err := readChangeLocks(br, len(endingIDs) > 0)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("lock holds to change: %w", err)
	}

	// Decide in request order against the locked holds: a hold ended by one change is not
	// there for the next.
	open, expired := map[string][]*hold{}, map[string][]*hold{}
	for _, h := range locked {
		open[h.orderID] = append(open[h.orderID], h)
	}
	for _, h := range late {
		expired[h.orderID] = append(expired[h.orderID], h)
	}
	var (
		soldLate, droppedLate []*hold
		ends                  holdEnds
	)
	type endGroup struct {
		state  string
		reason inventoryv1.ReleaseReason
		holds  []*hold
	}
	var (
		results  = make([][]*hold, len(cs))
		ended    = map[string]bool{}
		groups   []*endGroup
		extended []*hold
		deadline = map[string]time.Time{}
	)
	for i, c := range cs {
		var hs []*hold
		for _, h := range open[c.orderID] {
			if !ended[h.id] && (c.lineID == "" || h.lineID == c.lineID) {
				hs = append(hs, h)
			}
		}
		if c.kind == changeExtend {
			for _, h := range hs {
				if _, again := deadline[h.id]; !again {
					extended = append(extended, h)
				}
				// Never earlier: a late or replayed extension must not undo a later one.
				if c.expire.After(h.expireTime) {
					h.expireTime = c.expire
				}
				deadline[h.id] = h.expireTime
				cp := *h // as it is now: a later change of this batch may end it
				results[i] = append(results[i], &cp)
			}
			continue
		}
		state, reason := holdReleased, c.reason
		if c.kind == changeCommit {
			state, reason = holdCommitted, inventoryv1.ReleaseReason_RELEASE_REASON_UNSPECIFIED
		}
		var g *endGroup
		for _, x := range groups {
			if x.state == state && x.reason == reason {
				g = x
			}
		}
		if g == nil {
			g = &endGroup{state: state, reason: reason}
			groups = append(groups, g)
		}
		for _, h := range hs {
			ended[h.id] = true
		}
		g.holds = append(g.holds, hs...)
		results[i] = hs
		if c.handedOver != nil {
			// Goods cannot have left before they were held: a hand-over dated earlier (a zero
			// time, a clock far behind) would pass every count since as having seen them gone,
			// and take nothing off on hand.
			at := *c.handedOver
			for _, h := range slices.Concat(hs, expired[c.orderID]) {
				if at.Before(h.createTime) {
					at = h.createTime
				}
			}
			ends.handedOver(c.orderID, at)
		}
		// The order's holds that expired before this change came are settled by it: a commit
		// sells their goods, a release (the line dropped, the order cancelled) leaves them.
		for _, h := range expired[c.orderID] {
			if ended[h.id] || c.lineID != "" && h.lineID != c.lineID {
				continue
			}
			ended[h.id] = true
			if c.kind == changeCommit {
				soldLate = append(soldLate, h)
				results[i] = append(results[i], h)
			} else {
				droppedLate = append(droppedLate, h)
			}
		}
	}
	if len(extended) == 0 && len(ended) == 0 {
		return results, nil // a retry: nothing to write; the deferred rollback ends the transaction
	}

	// Extensions first: every one of them applies to holds that were open at its turn, before
	// any end of this batch.
	p := s.newPipeline()
	if len(extended) > 0 {
		ids, times := make([]string, len(extended)), make([]time.Time, len(extended))
		for i, h := range extended {
			ids[i], times[i] = h.id, deadline[h.id]
		}
		p.execRows(int64(len(ids)), "extend holds", extendHoldsByIDSQL, ids, times, holdOpen)
	}
	now := time.Now()
	for _, g := range groups {
		if err := ends.add(&p, levels, g.holds, g.state, g.reason, actorHolds); err != nil {
			return nil, err
		}
	}
	if err := ends.addLateSales(levels, soldLate, actorHolds); err != nil {
		return nil, err
	}
	for _, h := range droppedLate {
		ends.settledLate = append(ends.settledLate, h.id)
	}
	if err := ends.queue(&p, levels, now); err != nil {
		return nil, err
	}
	if err := p.commit(ctx); err != nil {
		return nil, err
	}
	err = p.run(ctx, conn)
	if err == nil && s.loseCommitReply.Load() {
		err = errors.New("test: the connection was lost during COMMIT")
	}
	// Committed with its reply lost, the changes must not be made again one by one
	// (ChangeHolds): they would find their holds ended and answer that a commit ended nothing,
	// which fulfilment takes for certain proof that goods left the store unheld.
	if err != nil && !pgdb.Committed(ctx, s.db, xid, err, commitCheckTimeout, s.log) {
		return nil, fmt.Errorf("change holds: %w", err)
	}
	return results, nil
}

// commitCheckTimeout bounds asking Postgres how a transaction whose COMMIT reply was lost
// ended.
const commitCheckTimeout = 5 * time.Second

// readChangeLocks reads the results of changeHolds' first round trip: the transaction's id,
// then the locked open holds, the late ones (withLate: the batch commits) and stock rows.
func readChangeLocks(br pgx.BatchResults, withLate bool) (xid string, hs, late []*hold, levels map[stockKey]*level, err error) {
	if _, err = br.Exec(); err != nil { // BEGIN
		return "", nil, nil, nil, err
	}
	if err = br.QueryRow().Scan(&xid); err != nil {
		return "", nil, nil, nil, err
	}
	if _, err = br.Exec(); err != nil { // the plan settings
		return "", nil, nil, nil, err
	}
	if hs, err = queryHolds(br); err != nil {
		return "", nil, nil, nil, err
	}
	if withLate {
		if late, err = queryHolds(br); err != nil {
			return "", nil, nil, nil, err
		}
	}
	rows, err := br.Query()
	if err != nil {
		return "", nil, nil, nil, err
	}
	if levels, err = scanLevelsOf(rows, true); err != nil {
		return "", nil, nil, nil, err
	}
	return xid, hs, late, levels, nil
}

func queryHolds(br pgx.BatchResults) ([]*hold, error) {
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	return scanHolds(rows)
}

// holdEnds collects the ends of holds that a transaction has locked and found open, and what
// they entail: the hold rows' new state, the stock deltas (reserved down; on hand down too for
// a sale), one ledger row per hold and the stock rows' events.
type holdEnds struct {
	ids, states, reasons []string
	settledLate          []string // ids of expired holds settled now (addLateSales)
	deltas               stockDeltas
	ms                   []movement
	kinds                map[stockKey]string // the last kind of change of each row
	// handed is when each committed order was handed over, where its commit said.
	handed map[string]time.Time
	// countTaken is what the commits took from each row's count_short (afterCount).
	countTaken map[stockKey]int32
}

// handedOver notes when order was handed over, for its commit's ledger rows and on hand.
func (e *holdEnds) handedOver(order string, at time.Time) {
	if e.handed == nil {
		e.handed = map[string]time.Time{}
	}
	e.handed[order] = at
}

// afterCount is for a commit of h's goods, which left the store at its order's hand-over:
// when that was no later than the row's last count, which did not find them, it gives what
// on hand should lose still, at most want: what that count could not take off (count_short:
// units it left because they were reserved, this hold's among them), and takes it from there.
// counted is false when the count came before the hand-over, or no hand-over time was given:
// on hand then loses want, as for any sale.
func (e *holdEnds) afterCount(l *level, h *hold, want int32) (take int32, note string, counted bool) {
	at, ok := e.handed[h.orderID]
	if !ok || l.counted == nil || at.After(*l.counted) || l.countShort == nil {
		// A count from before count_short was kept may have left these goods on hand: they
		// come off in full, as they did then.
		return want, "", false
	}
	take = max(min(want, *l.countShort), 0)
	*l.countShort -= take
	if take > 0 {
		if e.countTaken == nil {
			e.countTaken = map[stockKey]int32{}
		}
		e.countTaken[h.key] += take
	}
	what := "in that count already: on hand unchanged"
	if take > 0 {
		what = fmt.Sprintf("on hand down by the %d of them that count left as reserved", take)
	}
	return take, fmt.Sprintf("handed over at %s, before the count at %s: %s", at.UTC().Format(time.RFC3339),
		l.counted.UTC().Format(time.RFC3339), what), true
}

// occurredOf is when h's order was handed over, where its commit said.
func (e *holdEnds) occurredOf(h *hold) *time.Time {
	if at, ok := e.handed[h.orderID]; ok {
		return &at
	}
	return nil
}

const endHoldsSQL = `UPDATE holds h SET state = u.state, release_reason = u.reason, end_time = now()
	FROM unnest($1::uuid[], $2::text[], $3::text[]) AS u(id, state, reason)
	WHERE h.id = u.id AND h.state = $4`

// add ends hs as state (for reason, when released): levels (locked by the caller) change in
// memory, and p gets the holds' events (one per released hold, with an id derived from the
// hold, so a rewrite could only be a duplicate).
func (e *holdEnds) add(p *pipeline, levels map[stockKey]*level, hs []*hold, state string, reason inventoryv1.ReleaseReason, actor *commonv1.Actor) error {
	if len(hs) == 0 {
		return nil
	}
	reasonName := strings.ToLower(strings.TrimPrefix(reason.String(), "RELEASE_REASON_"))
	kind, subject := kindHoldReleased, SubjectHoldReleased
	switch state {
	case holdCommitted:
		kind, reasonName = kindHoldCommitted, ""
	case holdExpired:
		subject = SubjectHoldExpired
	}
	for _, h := range hs {
		l, err := e.levelOf(levels, h)
		if err != nil {
			return err
		}
		var (
			dOnHand, requested int32
			note               string
			occurred           *time.Time
		)
		if state == holdCommitted {
			take, countNote, _ := e.afterCount(l, h, h.quantity)
			dOnHand, note, occurred = -take, countNote, e.occurredOf(h)
			if take != h.quantity {
				requested = -h.quantity // the units that left the shelf, for a count reported later
			}
		}
		l.onHand += dOnHand
		l.reserved -= h.quantity
		e.kinds[h.key] = kind
		e.deltas.add(h.key, dOnHand, -h.quantity)
		e.ms = append(e.ms, movement{key: h.key, kind: kind, onHandDelta: dOnHand, reservedDelta: -h.quantity, after: *l,
			actor: actor, note: note, orderID: h.orderID, holdID: h.id, requested: requested, occurred: occurred})
		e.ids, e.states, e.reasons = append(e.ids, h.id), append(e.states, state), append(e.reasons, reasonName)
		h.state = state
		if state != holdCommitted {
			ev := &inventoryv1.HoldReleased{Hold: h.proto(), Reason: reason}
			if err := p.enqueue(subject, ev, outbox.DeterministicID("inventory", "hold", h.id, "ended"), ""); err != nil {
				return err
			}
		}
	}
	return nil
}

// addLateSales sells the goods of hs, holds of orders handed over whose holds had expired
// before the commit came (inventory unreachable past their deadline and grace): the goods left
// the store all the same, and on hand left as it was would promise them to the next order, to
// be found missing at its pickup. Each is an in-store sale of the order's hold, once (the hold
// is marked settled_late, as a late release marks one it leaves); it takes on hand no lower
// than what is reserved for open orders (their stock may be these very goods, freed by the
// expiry and reserved since), the ledger noting any units short for staff to settle, and the
// units asked (requested) for a count reported later to take off.
func (e *holdEnds) addLateSales(levels map[stockKey]*level, hs []*hold, actor *commonv1.Actor) error {
	for _, h := range hs {
		l, err := e.levelOf(levels, h)
		if err != nil {
			return err
		}
		// A count taken since the hand-over did not find the goods: only what it left (none,
		// unless it was cut short at what open orders reserved) is still to go.
		want, countNote, counted := e.afterCount(l, h, h.quantity)
		sold := max(min(want, l.onHand-l.reserved), 0)
		if counted && sold < want {
			*l.countShort += want - sold // not taken after all
			e.countTaken[h.key] -= want - sold
		}
		note := fmt.Sprintf("handed over for order %s after its hold expired", h.orderID)
		if countNote != "" {
			note += "; " + countNote
		}
		if short := want - sold; short > 0 {
			note = shortNote(note, short, l.reserved)
		}
		l.onHand -= sold
		e.kinds[h.key] = kindInStoreSale
		e.deltas.add(h.key, -sold, 0)
		m := movement{key: h.key, kind: kindInStoreSale, onHandDelta: -sold, after: *l,
			actor: actor, note: note, orderID: h.orderID, holdID: h.id, occurred: e.occurredOf(h)}
		if sold != h.quantity {
			m.requested = -h.quantity
		}
		e.ms = append(e.ms, m)
		e.settledLate = append(e.settledLate, h.id)
	}
	return nil
}

// levelOf is the locked level of h's stock row.
func (e *holdEnds) levelOf(levels map[stockKey]*level, h *hold) (*level, error) {
	if e.kinds == nil {
		e.kinds = map[stockKey]string{}
	}
	l, ok := levels[h.key]
	if !ok {
		return nil, fmt.Errorf("hold %s: no stock row for %s at %s", h.id, h.key.sku, h.key.store)
	}
	return l, nil
}

// takeCountShortSQL takes what commits of goods handed over before a count took off on hand
// from what that count could not (holdEnds.afterCount).
const takeCountShortSQL = `UPDATE stock st SET count_short = st.count_short - u.taken
	FROM unnest($1::text[], $2::text[], $3::int[]) AS u(store_id, sku, taken)
	WHERE st.store_id = u.store_id AND st.sku = u.sku`

const markSettledLateSQL = `UPDATE holds SET settled_late = true WHERE id = ANY($1::uuid[]) AND state = $2 AND NOT settled_late`

// queue adds the writes of every end added to p, and StockLevelChanged for every row they
// changed, with its level after them all.
func (e *holdEnds) queue(p *pipeline, levels map[stockKey]*level, now time.Time) error {
	if len(e.ids) == 0 && len(e.settledLate) == 0 {
		return nil
	}
	if len(e.ids) > 0 {
		p.execRows(int64(len(e.ids)), "end holds", endHoldsSQL, e.ids, e.states, e.reasons, holdOpen)
	}
	if len(e.settledLate) > 0 {
		p.execRows(int64(len(e.settledLate)), "settle late holds", markSettledLateSQL, e.settledLate, holdExpired)
	}
	if keys := slices.Collect(maps.Keys(e.countTaken)); len(keys) > 0 {
		keys = sortedKeys(keys)
		stores, skus := keyArrays(keys)
		taken := make([]int32, len(keys))
		for i, k := range keys {
			taken[i] = e.countTaken[k]
		}
		p.execRows(int64(len(keys)), "take from count short", takeCountShortSQL, stores, skus, taken)
	}
	p.queueDeltas(&e.deltas)
	p.queueMovements(e.ms)
	return p.queueLevelEvents(&e.deltas, levels, func(k stockKey) string { return e.kinds[k] }, nil, now)
}
