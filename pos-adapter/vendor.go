package posadapter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/edge"
	"github.com/handoff-dev/handoff/internal/pgtext"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// VendorWebhookPath is where a vendor POS posts a store's in-store events:
// POST /webhooks/vendor/<store_id>, signed with the store's webhook secret (SignatureHeader).
const VendorWebhookPath = "/webhooks/vendor/"

// maxVendorBody caps an inbound vendor event.
const maxVendorBody = 64 << 10

// VendorEvent is what a vendor POS posts: one in-store sale, return or stock count of one SKU.
type VendorEvent struct {
	// EventID is the vendor's id of the event, unique per store: a second delivery of the same
	// id changes nothing.
	EventID string `json:"event_id"`
	// Type is "sale" (on hand goes down by quantity), "return" (up by quantity) or "count"
	// (on hand is quantity).
	Type string `json:"type"`
	// SKU is the SKU code.
	SKU string `json:"sku"`
	// Quantity is units sold or returned (1 or more), or counted (0 or more). Required: a
	// count posted without one is refused, not taken as 0.
	Quantity int32 `json:"quantity"`
	// OccurredAt is when the sale, return or count happened at the till (RFC 3339); unset, when
	// it arrives. Events arrive out of order (a till that was offline sends its backlog): each
	// applies as of when it happened, so a sale from before the last count is not taken off
	// again and a count keeps the sales recorded since it was taken. At most 5 minutes ahead of
	// the server's clock; a count at most 24 hours old. Given or not is read from the field's
	// presence, not its value: 0001-01-01T00:00:00Z is a time like any other (refused for a
	// count as too old), not "unset", which would apply the event as happening now.
	OccurredAt *time.Time `json:"occurred_at,omitempty"`
}

// VendorResult is the adapter's answer to a vendor event.
type VendorResult struct {
	EventID string `json:"event_id,omitempty"`
	// Status is "applied" (HTTP 200), "duplicate" (200: applied before; nothing done now),
	// "refused" (422: inventory refused it for good, e.g. an unknown store; the same event id
	// gets the same answer) or "deferred" (503, with Retry-After: inventory cannot apply it as
	// stock stands now, e.g. a sale of a SKU it has no count of yet, whose earlier count is still
	// to arrive; nothing is recorded, and a retry applies it once it can). Other answers without
	// a status are 400 (the event is malformed; Error names the field), 401 (the signature),
	// 409 (the event id was used for another change), 429 (too many refused requests from the
	// address; Retry-After) and 503 (try again later).
	Status string `json:"status,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Vendor event types.
const (
	vendorSale   = "sale"
	vendorReturn = "return"
	vendorCount  = "count"
)

// serveVendorWebhook checks the signature and timestamp before reading anything else, then
// applies the event at inventory once per (store, vendor event id).
//
// Refused signatures are limited, each costing a log line and a well-formed one a database read
// of the store's secret, so a flood of made-up ones costs little. They are counted apart from
// refused terminal credentials (a store's misconfigured vendor must not lock out the terminals
// behind its address), and twice:
//   - refusedVendorAddr, per address (and site: an IPv6 /48), every refusal, with room for
//     many stores' worth (Config.VendorAddressRoom): the bound on what one client may cost,
//     whatever store ids it names;
//   - refusedVendor, per address and store, a refused signature of a well-formed, fresh
//     header: one store's stale secret (its vendor's backlog still signed with the old one)
//     is stopped there, long before it uses up its address's room, so the other stores a
//     vendor's cloud posts for from the same address go on.
//
// A store without a secret is refused as one with another secret is, in the answer and in what
// is charged: neither tells which stores have one. A client over either limit is told to wait
// (429) before anything more is read.
func (a *Adapter) serveVendorWebhook(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	store := r.PathValue("store_id")
	log := a.log.With("store_id", store, "remote", r.RemoteAddr)
	tooMany := func(wait time.Duration) {
		w.Header().Set("Retry-After", strconv.Itoa(int(max(wait.Round(time.Second), time.Second)/time.Second)))
		writeVendor(w, http.StatusTooManyRequests, VendorResult{Error: "too many refused requests from this address; retry later"})
	}
	doneAddr, ok, wait := a.refusedVendorAddr.Attempt(r.RemoteAddr)
	if !ok {
		tooMany(wait)
		return
	}
	doneStore, ok, wait := a.refusedVendor.Attempt(edge.ClientKey(r.RemoteAddr) + " " + store)
	if !ok {
		doneAddr(false)
		tooMany(wait)
		return
	}
	var refused, refusedStore bool
	defer func() { doneAddr(refused); doneStore(refusedStore) }()
	if checkStoreID(store) != nil {
		writeVendor(w, http.StatusNotFound, VendorResult{Error: "unknown store"})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxVendorBody))
	if err != nil {
		// Too large only when it is: a body cut off by the edge's time limit (os.ErrDeadlineExceeded)
		// or by its connection is told so, for the vendor to send it again.
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			writeVendor(w, http.StatusRequestEntityTooLarge, VendorResult{Error: fmt.Sprintf("body over %d bytes", maxVendorBody)})
		case errors.Is(err, os.ErrDeadlineExceeded):
			writeVendor(w, http.StatusRequestTimeout, VendorResult{Error: "body not received in time; send it again"})
		default:
			writeVendor(w, http.StatusBadRequest, VendorResult{Error: "body did not arrive whole; send it again"})
		}
		return
	}
	// What can be checked without the secret is, before it is read.
	sig, err := parseSignature(r.Header.Get(SignatureHeader), time.Now(), a.cfg.SignatureTolerance)
	if err == nil {
		var secret, previous string // previous: the secret replaced, while a rotation's grace runs
		err = a.db.QueryRow(ctx, `SELECT signing_secret, CASE WHEN previous_secret_expire_time > now() THEN previous_secret ELSE '' END
			FROM store_webhooks WHERE store_id = $1`, store).Scan(&secret, &previous)
		switch {
		case errors.Is(err, pgx.ErrNoRows) || err == nil && secret == "":
			err = fmt.Errorf("%w (the store has no webhook secret)", ErrBadSignature)
		case err != nil:
			log.ErrorContext(ctx, "vendor webhook: read signing secret", "err", err)
			writeVendor(w, http.StatusServiceUnavailable, VendorResult{Error: "try again"})
			return
		default:
			if err = sig.verify(secret, body); err != nil && previous != "" {
				err = sig.verify(previous, body)
			}
		}
	}
	if err != nil {
		refused, refusedStore = true, errors.Is(err, ErrBadSignature)
		log.WarnContext(ctx, "vendor webhook refused", "reason", err)
		msg := "signature rejected: " + err.Error()
		if errors.Is(err, ErrBadSignature) {
			msg = "signature rejected: " + ErrBadSignature.Error() // not whether the store has a secret
		}
		writeVendor(w, http.StatusUnauthorized, VendorResult{Error: msg})
		return
	}

	ev, msg := decodeVendorEvent(body)
	if msg == "" {
		msg = ev.check()
	}
	if msg != "" {
		writeVendor(w, http.StatusBadRequest, VendorResult{EventID: ev.EventID, Error: msg})
		return
	}
	code, res := a.applyVendorEvent(ctx, log.With("vendor_event", ev.EventID), store, ev)
	res.EventID = ev.EventID
	writeVendor(w, code, res)
}

// vendorRetryAfter is the Retry-After (seconds) of an answer telling the vendor to retry.
const vendorRetryAfter = "30"

// vendorEventJSON is a vendor event as posted: Quantity is a pointer so that a missing one (left
// out, null, misspelt) is told from 0, which for a count would wipe the SKU's stock; OccurredAt
// is parsed apart so that a bad one is refused naming the field.
type vendorEventJSON struct {
	EventID    string          `json:"event_id"`
	Type       string          `json:"type"`
	SKU        string          `json:"sku"`
	Quantity   *int32          `json:"quantity"`
	OccurredAt json.RawMessage `json:"occurred_at"`
}

// decodeVendorEvent reads a posted event, or says what is wrong with it, naming the field.
// Fields a vendor event does not have are refused: a misspelt occurred_at would otherwise apply
// the event as happening now, a misspelt quantity read as missing.
func decodeVendorEvent(body []byte) (VendorEvent, string) {
	var in vendorEventJSON
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err := dec.Decode(&in)
	if err == nil && len(bytes.TrimSpace(body[dec.InputOffset():])) > 0 {
		err = errors.New("more after the JSON object")
	}
	ev := VendorEvent{EventID: in.EventID, Type: in.Type, SKU: in.SKU}
	if in.Quantity != nil {
		ev.Quantity = *in.Quantity
	}
	if err == nil {
		err = exactKeys(body)
	}
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &te) && te.Field != "":
		want := "string"
		if te.Type.Kind() != reflect.String {
			want = "whole number (32 bits)"
		}
		return ev, fmt.Sprintf("%s: want a %s, got %s", te.Field, want, te.Value)
	case err != nil && strings.HasPrefix(err.Error(), "json: unknown field "):
		// The decoder says no more than this of an unknown field (no typed error).
		field := strings.TrimPrefix(err.Error(), "json: unknown field ")
		msg := fmt.Sprintf("%s: not a field of a vendor event (event_id, type, sku, quantity, occurred_at)", field)
		if in.Quantity == nil {
			msg = "quantity: required; " + msg
		}
		return ev, msg
	case err != nil && (strings.HasSuffix(err.Error(), ": given twice") || strings.HasSuffix(err.Error(), ": not valid UTF-8")):
		return ev, err.Error()
	case err != nil:
		return ev, "body is not a JSON vendor event: " + err.Error()
	case in.Quantity == nil:
		return ev, "quantity: required (0 or more for a count, 1 or more for a sale or return)"
	}
	if len(in.OccurredAt) > 0 && string(in.OccurredAt) != "null" {
		var at time.Time
		if err := json.Unmarshal(in.OccurredAt, &at); err != nil {
			return ev, fmt.Sprintf("occurred_at: want an RFC 3339 time (2006-01-02T15:04:05Z07:00), got %s", pgtext.Clip(string(in.OccurredAt), 60))
		}
		ev.OccurredAt = &at
	}
	return ev, ""
}

// vendorKeys are a vendor event's fields, as they must be spelt.
var vendorKeys = map[string]bool{"event_id": true, "type": true, "sku": true, "quantity": true, "occurred_at": true}

// exactKeys refuses a top-level key of body that is a vendor event's field spelt otherwise
// ("Quantity") or given twice: Go's JSON decoding takes the one case-insensitively and the other
// as its last value, so a body another reader takes differently would be applied. body is
// known to be one JSON object.
func exactKeys(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil { // {
		return err
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := t.(string)
		switch {
		case !vendorKeys[key]:
			return fmt.Errorf("json: unknown field %q", key)
		case seen[key]:
			return fmt.Errorf("%s: given twice", key)
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return err
		}
		if !exactText(skip) {
			return fmt.Errorf("%s: not valid UTF-8", key)
		}
	}
	return nil
}

// exactText reports whether a raw JSON value decodes to exactly the text it spells: valid
// UTF-8 with no unpaired surrogate escape (\ud800). Go's JSON decoding turns each of those
// into U+FFFD, so two vendor event ids that differ only there would be taken for one, and the
// second event answered "duplicate" and never applied.
func exactText(raw []byte) bool {
	if !utf8.Valid(raw) {
		return false
	}
	surrogate := func(i int) (rune, bool) { // the \uXXXX escape at raw[i:], if it is one
		if i+6 > len(raw) || raw[i] != '\\' || raw[i+1] != 'u' {
			return 0, false
		}
		n, err := strconv.ParseUint(string(raw[i+2:i+6]), 16, 16)
		return rune(n), err == nil
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		r, ok := surrogate(i)
		switch {
		case !ok:
			i++ // another escape: skip its second character
		case r >= 0xDC00 && r <= 0xDFFF:
			return false // a low surrogate with no high one before it
		case r >= 0xD800 && r <= 0xDBFF:
			if lo, ok := surrogate(i + 6); !ok || lo < 0xDC00 || lo > 0xDFFF {
				return false
			}
			i += 11
		default:
			i += 5
		}
	}
	return true
}

func (ev VendorEvent) check() string {
	switch {
	case ev.EventID == "" || utf8.RuneCountInString(ev.EventID) > 100:
		return "event_id: required, at most 100 characters"
	case strings.IndexByte(ev.EventID, 0) >= 0:
		return "event_id: must not contain NUL (U+0000) characters"
	case strings.IndexByte(ev.SKU, 0) >= 0:
		return "sku: must not contain NUL (U+0000) characters"
	case ev.Type != vendorSale && ev.Type != vendorReturn && ev.Type != vendorCount:
		return fmt.Sprintf("type: want sale, return or count, got %q", ev.Type)
	case ev.SKU == "" || len(ev.SKU) > 64:
		return "sku: required, at most 64 characters"
	case ev.Type == vendorCount && ev.Quantity < 0:
		return fmt.Sprintf("quantity: a count must be 0 or more, got %d", ev.Quantity)
	case ev.Type != vendorCount && ev.Quantity < 1:
		return fmt.Sprintf("quantity: a %s must be 1 or more, got %d", ev.Type, ev.Quantity)
	}
	return ""
}

// applyVendorEvent records the event (the idempotency record), makes the inventory change and
// records its outcome. A retry of an event still pending (the adapter or inventory failed half
// way) sends the very same inventory request, whose idempotency key makes inventory apply it
// at most once.
func (a *Adapter) applyVendorEvent(ctx context.Context, log *slog.Logger, store string, ev VendorEvent) (int, VendorResult) {
	var (
		typ, sku, state, result string
		qty                     int32
		request                 []byte
	)
	err := a.db.QueryRow(ctx, `SELECT type, sku, quantity, state, result, request FROM vendor_events
		WHERE store_id = $1 AND vendor_event_id = $2`, store, ev.EventID).Scan(&typ, &sku, &qty, &state, &result, &request)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		request, err = vendorRequest(store, ev)
		if err != nil {
			return a.vendorFailure(ctx, log, store, ev, err)
		}
		tag, err := a.db.Exec(ctx, `INSERT INTO vendor_events (store_id, vendor_event_id, type, sku, quantity, request)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`, store, ev.EventID, ev.Type, ev.SKU, ev.Quantity, request)
		if err != nil {
			log.ErrorContext(ctx, "vendor webhook: record event", "err", err)
			return http.StatusServiceUnavailable, VendorResult{Error: "try again"}
		}
		if tag.RowsAffected() == 0 {
			// The same event, delivered twice at once: the other delivery applies it.
			return a.applyVendorEvent(ctx, log, store, ev)
		}
	case err != nil:
		log.ErrorContext(ctx, "vendor webhook: read event", "err", err)
		return http.StatusServiceUnavailable, VendorResult{Error: "try again"}
	case typ != ev.Type || sku != ev.SKU || qty != ev.Quantity || !sameOccurrence(storedOccurTime(typ, request), ev):
		log.WarnContext(ctx, "vendor webhook refused: event id reused for another change")
		what := fmt.Sprintf("a %s of %d %s", typ, qty, sku)
		if at := storedOccurTime(typ, request); at != nil {
			what += " at " + at.AsTime().UTC().Format(time.RFC3339Nano)
		}
		return http.StatusConflict, VendorResult{Status: "refused",
			Error: fmt.Sprintf("event_id %q was already used for %s", ev.EventID, what)}
	case state == "applied":
		return http.StatusOK, VendorResult{Status: "duplicate"}
	case state == "refused":
		return http.StatusUnprocessableEntity, VendorResult{Status: "refused", Error: result}
	}

	ictx, err := a.adminContext(ctx, "vendor:"+store)
	if err != nil {
		return http.StatusServiceUnavailable, VendorResult{Error: "try again"}
	}
	ictx, cancel := a.callContext(ictx)
	defer cancel()
	if ev.Type == vendorCount {
		var req inventoryv1.SetStockRequest
		if err = proto.Unmarshal(request, &req); err == nil {
			_, err = a.inventory.SetStock(ictx, &req)
		}
	} else {
		var req inventoryv1.AdjustStockRequest
		if err = proto.Unmarshal(request, &req); err == nil {
			_, err = a.inventory.AdjustStock(ictx, &req)
		}
	}
	if err != nil {
		return a.vendorFailure(ctx, log, store, ev, err)
	}
	if _, err := a.db.Exec(ctx, `UPDATE vendor_events SET state = 'applied', done_time = now()
		WHERE store_id = $1 AND vendor_event_id = $2`, store, ev.EventID); err != nil {
		// Applied at inventory; the vendor's retry finds it pending and inventory's key makes
		// the resend a no-op.
		log.ErrorContext(ctx, "vendor webhook: record applied event", "err", err)
		return http.StatusServiceUnavailable, VendorResult{Error: "try again"}
	}
	log.InfoContext(ctx, "vendor event applied", "type", ev.Type, "sku", ev.SKU, "quantity", ev.Quantity)
	return http.StatusOK, VendorResult{Status: "applied"}
}

// vendorRequest builds the inventory request for ev. A count keeps the SKU's safety stock as
// inventory has it when the count is applied: the vendor knows nothing of it, and a value read
// now would, sent again on the vendor's retry, undo an operator's change made meanwhile.
func vendorRequest(store string, ev VendorEvent) ([]byte, error) {
	key := "vendor:" + ev.EventID
	note := "vendor POS " + ev.Type + " " + ev.EventID
	switch ev.Type {
	case vendorSale, vendorReturn:
		// A sale at the till has happened: it is applied even past what is reserved (clamped,
		// the shortfall in the ledger), never refused, or the stock sold would be promised again.
		req := &inventoryv1.AdjustStockRequest{StoreId: store, Sku: ev.SKU, Delta: -ev.Quantity,
			Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_IN_STORE_SALE, IdempotencyKey: key, Note: note, ClampToReserved: true,
			OccurTime: occurTime(ev)}
		if ev.Type == vendorReturn {
			req.Delta, req.Reason = ev.Quantity, inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_RETURN
		}
		return proto.Marshal(req)
	default:
		return proto.Marshal(&inventoryv1.SetStockRequest{StoreId: store, Sku: ev.SKU, OnHand: ev.Quantity, KeepSafetyStock: true,
			IdempotencyKey: key, Note: note, ClampToReserved: true, OccurTime: occurTime(ev)})
	}
}

// storedOccurTime is when the recorded request of an event says it happened (nil: unsaid; a
// time no event says when the request cannot be read).
func storedOccurTime(typ string, request []byte) *timestamppb.Timestamp {
	var m interface {
		proto.Message
		GetOccurTime() *timestamppb.Timestamp
	} = &inventoryv1.AdjustStockRequest{}
	if typ == vendorCount {
		m = &inventoryv1.SetStockRequest{}
	}
	if proto.Unmarshal(request, m) != nil {
		return &timestamppb.Timestamp{Seconds: -1}
	}
	return m.GetOccurTime()
}

// sameOccurrence reports whether ev happened when the event recorded under its id did. One
// recorded without a time (by a copy from before occurred_at was known) matches any.
func sameOccurrence(stored *timestamppb.Timestamp, ev VendorEvent) bool {
	return stored == nil || proto.Equal(stored, occurTime(ev))
}

func occurTime(ev VendorEvent) *timestamppb.Timestamp {
	if ev.OccurredAt == nil {
		return nil
	}
	return timestamppb.New(*ev.OccurredAt)
}

// vendorFailure answers an inventory refusal for good (422, recorded, so the same event id
// gets the same answer), one that depends on the stock as it stands (503 "deferred", the event
// stays pending: stockRefusal) or a failure worth retrying (503, the event stays pending).
func (a *Adapter) vendorFailure(ctx context.Context, log *slog.Logger, store string, ev VendorEvent, err error) (int, VendorResult) {
	st, ok := status.FromError(err)
	if ok {
		switch st.Code() {
		case codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition, codes.OutOfRange:
			msg := vendorMessage(st, ev)
			if stockRefusal(st) && !a.pastCountHorizon(ctx, store, ev) {
				log.InfoContext(ctx, "vendor event not applicable as stock stands; the vendor should retry", "type", ev.Type, "sku", ev.SKU, "err", msg)
				return http.StatusServiceUnavailable, VendorResult{Status: "deferred", Error: msg}
			}
			log.WarnContext(ctx, "vendor event refused by inventory", "type", ev.Type, "sku", ev.SKU, "err", msg)
			if _, err := a.db.Exec(ctx, `UPDATE vendor_events SET state = 'refused', result = $3, done_time = now()
				WHERE store_id = $1 AND vendor_event_id = $2 AND state = 'pending'`, store, ev.EventID, pgtext.Clip(msg, 500)); err != nil {
				log.ErrorContext(ctx, "vendor webhook: record refused event", "err", err)
			}
			return http.StatusUnprocessableEntity, VendorResult{Status: "refused", Error: msg}
		}
	}
	log.WarnContext(ctx, "vendor event not applied yet; the vendor should retry", "err", err)
	return http.StatusServiceUnavailable, VendorResult{Error: "inventory unavailable; retry later"}
}

// stockRefusal reports whether inventory refused a change for the stock as it stands (on hand
// would go below 0 or the reserved units): events arrive out of order, and a sale that comes
// before the count it follows (of a SKU never counted, say) applies once the count is in.
// Recorded as refused for good, it would be lost. Inventory says so with the reason of the
// status's google.rpc.ErrorInfo (services/inventory's Reason constants); the message is for
// people and may be reworded. Its other FailedPreconditions are for good: past the maximum
// level (no count makes it fit), an idempotency key used for another change.
func stockRefusal(st *status.Status) bool {
	if st.Code() != codes.FailedPrecondition {
		return false
	}
	switch rpcerr.Reason(st.Err(), inventoryErrorDomain) {
	case inventoryStockBelowZero, inventoryStockBelowReserved:
		return true
	case "":
		// An inventory copy older than its reasons (a rolling upgrade runs one next to a newer
		// adapter) names the field alone: told from its text, as before, lest a sale that a
		// later count would make fit be refused for good. Remove once every inventory sends
		// the reason.
		msg := st.Message()
		return (strings.HasPrefix(msg, "delta: ") || strings.HasPrefix(msg, "on_hand: ")) &&
			!strings.Contains(msg, " above ")
	}
	return false
}

// Inventory's ErrorInfo domain and the reasons of its refusals for the stock as it stands
// (services/inventory ErrorDomain and Reason*: a contract on the wire, spelt here so that the
// adapter does not build against the service's package).
const (
	inventoryErrorDomain        = "inventory.handoff.dev"
	inventoryStockBelowZero     = "STOCK_BELOW_ZERO"
	inventoryStockBelowReserved = "STOCK_BELOW_RESERVED"
)

// countHorizon is how old a count inventory still takes (its maxCountAge): a change waiting
// for a count from before it waits at most this long after it happened. No count that could
// make it apply can come later, so it is then refused for good: a sale of a SKU never stocked
// (a typo, an item sold only at the till) is not deferred for ever.
const countHorizon = 24 * time.Hour

// pastCountHorizon reports whether ev happened longer than countHorizon ago: when it says, else
// when it was first received (a vendor that sends no time retries with none).
func (a *Adapter) pastCountHorizon(ctx context.Context, store string, ev VendorEvent) bool {
	at := ev.OccurredAt
	var received time.Time
	if err := a.db.QueryRow(ctx, `SELECT receive_time FROM vendor_events WHERE store_id = $1 AND vendor_event_id = $2`,
		store, ev.EventID).Scan(&received); err == nil && (at == nil || received.Before(*at)) {
		at = &received
	}
	return at != nil && time.Since(*at) > countHorizon
}

// vendorFields names, for the fields of inventory's requests a vendor event fills, the event's
// own: a refusal then points at what the vendor sent.
var vendorFields = map[string]string{"occur_time": "occurred_at", "on_hand": "quantity", "delta": "quantity"}

// vendorMessage is inventory's refusal of ev in the vendor's words: its field violations (see
// rpcerr.Violations) name the event's fields, and so does a plain message that starts with one
// of inventory's ("delta: -2 would take …" is "quantity: a sale of 2 would take …": the vendor
// sent no delta, nor a negative number).
func vendorMessage(st *status.Status, ev VendorEvent) string {
	for _, d := range st.Details() {
		br, ok := d.(*errdetails.BadRequest)
		if !ok || len(br.GetFieldViolations()) == 0 {
			continue
		}
		parts := make([]string, len(br.GetFieldViolations()))
		for i, fv := range br.GetFieldViolations() {
			field := fv.GetField()
			if own, ok := vendorFields[field]; ok {
				field = own
			}
			parts[i] = field + ": " + fv.GetDescription()
		}
		return strings.Join(parts, "; ")
	}
	msg := st.Message()
	field, rest, ok := strings.Cut(msg, ": ")
	own, mapped := vendorFields[field]
	if !ok || !mapped {
		return msg
	}
	if field == "delta" {
		// Inventory's delta is the quantity, negated for a sale.
		if n, after, ok := strings.Cut(rest, " "); ok {
			if _, err := strconv.Atoi(n); err == nil {
				rest = fmt.Sprintf("a %s of %d %s", ev.Type, ev.Quantity, after)
			}
		}
	}
	return own + ": " + rest
}

func writeVendor(w http.ResponseWriter, code int, res VendorResult) {
	w.Header().Set("Content-Type", "application/json")
	if code == http.StatusServiceUnavailable && w.Header().Get("Retry-After") == "" {
		// Every "try again" says when: the secret's read failing as much as inventory away.
		w.Header().Set("Retry-After", vendorRetryAfter)
	}
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(res)
}
