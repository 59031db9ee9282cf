package posadapter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/pgtext"
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
	// Quantity is units sold or returned (1 or more), or counted (0 or more).
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
	// Status is "applied", "duplicate" (applied before; nothing done now) or "refused"
	// (inventory refused it for good, e.g. an unknown SKU).
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
func (a *Adapter) serveVendorWebhook(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	store := r.PathValue("store_id")
	log := a.log.With("store_id", store, "remote", r.RemoteAddr)
	if checkStoreID(store) != nil {
		writeVendor(w, http.StatusNotFound, VendorResult{Error: "unknown store"})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxVendorBody))
	if err != nil {
		writeVendor(w, http.StatusRequestEntityTooLarge, VendorResult{Error: fmt.Sprintf("body over %d bytes", maxVendorBody)})
		return
	}
	var secret string
	err = a.db.QueryRow(ctx, `SELECT signing_secret FROM store_webhooks WHERE store_id = $1`, store).Scan(&secret)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		log.ErrorContext(ctx, "vendor webhook: read signing secret", "err", err)
		writeVendor(w, http.StatusServiceUnavailable, VendorResult{Error: "try again"})
		return
	}
	if secret == "" {
		log.WarnContext(ctx, "vendor webhook refused: the store has no webhook secret")
		writeVendor(w, http.StatusUnauthorized, VendorResult{Error: "signature rejected"})
		return
	}
	if err := VerifySignature(secret, r.Header.Get(SignatureHeader), body, time.Now(), a.cfg.SignatureTolerance); err != nil {
		log.WarnContext(ctx, "vendor webhook refused", "reason", err)
		writeVendor(w, http.StatusUnauthorized, VendorResult{Error: "signature rejected: " + err.Error()})
		return
	}

	var ev VendorEvent
	if err := json.Unmarshal(body, &ev); err != nil {
		writeVendor(w, http.StatusBadRequest, VendorResult{Error: "body is not a JSON vendor event: " + err.Error()})
		return
	}
	if msg := ev.check(); msg != "" {
		writeVendor(w, http.StatusBadRequest, VendorResult{EventID: ev.EventID, Error: msg})
		return
	}
	code, res := a.applyVendorEvent(ctx, log.With("vendor_event", ev.EventID), store, ev)
	res.EventID = ev.EventID
	writeVendor(w, code, res)
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
// gets the same answer) or a failure worth retrying (503, the event stays pending).
func (a *Adapter) vendorFailure(ctx context.Context, log *slog.Logger, store string, ev VendorEvent, err error) (int, VendorResult) {
	st, ok := status.FromError(err)
	if ok {
		switch st.Code() {
		case codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition, codes.OutOfRange:
			msg := vendorMessage(st)
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

// vendorFields names, for the fields of inventory's requests a vendor event fills, the event's
// own: a refusal then points at what the vendor sent.
var vendorFields = map[string]string{"occur_time": "occurred_at", "on_hand": "quantity", "delta": "quantity"}

// vendorMessage is inventory's refusal in the vendor's words: its field violations (see
// rpcerr.Violations) name the event's fields; a refusal without them is kept as it is.
func vendorMessage(st *status.Status) string {
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
	return st.Message()
}

func writeVendor(w http.ResponseWriter, code int, res VendorResult) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(res)
}
