package posadapter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/edge"
	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/pagetoken"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	"github.com/handoff-dev/handoff/internal/storeid"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
	"github.com/handoff-dev/handoff/proto/handoff/pos/v1/posv1connect"
)

// Limits of the admin API.
const (
	maxTerminalName      = 100
	maxTerminalStores    = 100
	maxEscalateAfter     = 24 * time.Hour
	defaultTerminalsPage = 100
	maxTerminalsPage     = 1000
	maxWebhookURLLength  = 2000
)

func checkStoreID(id string) error {
	if !storeid.Valid(id) {
		return fmt.Errorf("%q is not a store id (%s)", rpcerr.Echo(id), storeid.Rule)
	}
	return nil
}

// storesAtInventory checks that inventory knows each store (CLOSED ones included). A terminal,
// setting or webhook for a store nobody runs would be stored and never used, so an admin's
// typo is refused, naming field(i), instead; inventory being unreachable is Unavailable.
func (a *Adapter) storesAtInventory(ctx context.Context, ids []string, field func(i int) string) error {
	ctx, cancel := a.callContext(ctx)
	defer cancel()
	unknown := make([]bool, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, id := range ids {
		g.Go(func() error {
			_, err := a.locator.GetStore(gctx, &inventoryv1.GetStoreRequest{StoreId: id})
			if status.Code(err) == codes.NotFound {
				unknown[i] = true
				return nil
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return edge.ConnectError(err)
	}
	var v rpcerr.Violations
	for i, id := range ids {
		if unknown[i] {
			v.Addf(field(i), "inventory has no store %q", id)
		}
	}
	return v.Err()
}

// adminAPI is TerminalAdminService; the interceptor has already required an admin token.
type adminAPI struct {
	posv1connect.UnimplementedTerminalAdminServiceHandler
	a *Adapter
}

func (api adminAPI) RegisterTerminal(ctx context.Context, req *connect.Request[posv1.RegisterTerminalRequest]) (*connect.Response[posv1.RegisterTerminalResponse], error) {
	a := api.a
	var v rpcerr.Violations
	name := strings.TrimSpace(req.Msg.GetName())
	switch {
	case name == "":
		v.Add("name", "required")
	case utf8.RuneCountInString(name) > maxTerminalName:
		v.Addf("name", "at most %d characters", maxTerminalName)
	}
	var stores []string
	switch n := len(req.Msg.GetStoreIds()); {
	case n == 0:
		v.Add("store_ids", "at least one store is required")
	case n > maxTerminalStores:
		v.Addf("store_ids", "at most %d stores, got %d", maxTerminalStores, n)
	}
	for i, s := range req.Msg.GetStoreIds() {
		if err := checkStoreID(s); err != nil {
			v.Add(fmt.Sprintf("store_ids[%d]", i), err.Error())
		} else if !slices.Contains(stores, s) {
			stores = append(stores, s)
		}
	}
	if err := v.Err(); err != nil {
		return nil, a.fail(ctx, "", err)
	}
	named := func(i int) string {
		return fmt.Sprintf("store_ids[%d]", slices.Index(req.Msg.GetStoreIds(), stores[i]))
	}
	if err := a.storesAtInventory(ctx, stores, named); err != nil {
		return nil, a.fail(ctx, "", err)
	}
	id, cred, hash, err := newTerminalCredential()
	if err != nil {
		return nil, a.internal(ctx, "make terminal credential", err)
	}
	t, err := scanTerminal(a.db.QueryRow(ctx, `
		INSERT INTO terminals (id, name, store_ids, credential_hash) VALUES ($1, $2, $3, $4)
		RETURNING `+terminalColumns, id, name, stores, hash))
	if err != nil {
		return nil, a.internal(ctx, "register terminal", err)
	}
	a.log.InfoContext(ctx, "terminal registered", "terminal", id, "stores", stores, "by", adminName(ctx))
	return connect.NewResponse(&posv1.RegisterTerminalResponse{Terminal: t, Credential: cred}), nil
}

// RevokeTerminal stops a terminal's credential at once: every later call with it is
// Unauthenticated, and its open streams are closed here and, through the TerminalRevoked
// event, in every other copy of the adapter.
func (api adminAPI) RevokeTerminal(ctx context.Context, req *connect.Request[posv1.RevokeTerminalRequest]) (*connect.Response[posv1.RevokeTerminalResponse], error) {
	a := api.a
	id := req.Msg.GetTerminalId()
	if id == "" {
		return nil, a.fail(ctx, "", rpcerr.Invalid("terminal_id", "required"))
	}
	tx, err := a.db.Begin(ctx)
	if err != nil {
		return nil, a.internal(ctx, "revoke terminal", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var already bool
	if err := tx.QueryRow(ctx, `SELECT revoke_time IS NOT NULL FROM terminals WHERE id = $1 FOR UPDATE`, id).Scan(&already); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, a.fail(ctx, "", rpcerr.NotFound("terminal", id))
		}
		return nil, a.internal(ctx, "revoke terminal", err)
	}
	t, err := scanTerminal(tx.QueryRow(ctx, `UPDATE terminals SET revoke_time = coalesce(revoke_time, now()) WHERE id = $1 RETURNING `+terminalColumns, id))
	if err != nil {
		return nil, a.internal(ctx, "revoke terminal", err)
	}
	if !already {
		if _, err := outbox.Enqueue(ctx, tx, TerminalRevokedSubject, &posv1.TerminalRevoked{Terminal: t}); err != nil {
			return nil, a.internal(ctx, "revoke terminal", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, a.internal(ctx, "revoke terminal", err)
	}
	a.credentials.revoke(id)
	a.hub.revoke(id)
	if !already {
		a.log.InfoContext(ctx, "terminal revoked", "terminal", id, "by", adminName(ctx))
	}
	return connect.NewResponse(&posv1.RevokeTerminalResponse{Terminal: t}), nil
}

func (api adminAPI) ListTerminals(ctx context.Context, req *connect.Request[posv1.ListTerminalsRequest]) (*connect.Response[posv1.ListTerminalsResponse], error) {
	a := api.a
	store := req.Msg.GetStoreId()
	if store != "" {
		if err := checkStoreID(store); err != nil {
			return nil, a.fail(ctx, "", rpcerr.Invalid("store_id", err.Error()))
		}
	}
	size, err := pagetoken.PageSize(req.Msg.GetPageSize(), defaultTerminalsPage, maxTerminalsPage)
	if err != nil {
		return nil, a.fail(ctx, "", err)
	}
	var after terminalPosition
	hasAfter, err := pagetoken.Decode(req.Msg, &after)
	if err != nil {
		return nil, a.fail(ctx, "", err)
	}
	sql, args := listTerminalsSQL, []any{req.Msg.GetIncludeRevoked(), hasAfter, time.UnixMicro(after.Time), after.ID, size + 1}
	if store != "" {
		sql, args = listStoreTerminalsSQL, append(args, store)
	}
	rows, err := a.db.Query(ctx, sql, args...)
	if err != nil {
		return nil, a.internal(ctx, "list terminals", err)
	}
	ts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*posv1.Terminal, error) { return scanTerminal(r) })
	if err != nil {
		return nil, a.internal(ctx, "list terminals", err)
	}
	res := &posv1.ListTerminalsResponse{Terminals: ts}
	if len(ts) > size {
		res.Terminals = ts[:size]
		last := ts[size-1]
		res.NextPageToken = pagetoken.Encode(req.Msg, terminalPosition{Time: last.GetCreateTime().AsTime().UnixMicro(), ID: last.GetId()})
	}
	return connect.NewResponse(res), nil
}

// listTerminalsSQL is a page of the chain's terminals, in the order of terminals_by_create_time.
// listStoreTerminalsSQL is one of a store's ($6): containment, which the store_ids index serves
// (a store's few terminals, not the chain's thousands, read and sorted).
const (
	listTerminalsSQL = `SELECT ` + terminalColumns + ` FROM terminals
		WHERE ($1 OR revoke_time IS NULL) AND (NOT $2 OR (create_time, id) > ($3, $4))
		ORDER BY create_time, id LIMIT $5`
	listStoreTerminalsSQL = `SELECT ` + terminalColumns + ` FROM terminals
		WHERE store_ids @> ARRAY[$6::text] AND ($1 OR revoke_time IS NULL) AND (NOT $2 OR (create_time, id) > ($3, $4))
		ORDER BY create_time, id LIMIT $5`
)

// terminalPosition is ListTerminals' page position: the last terminal's create time (Unix
// microseconds, as stored) and id.
type terminalPosition struct {
	Time int64  `json:"t"`
	ID   string `json:"i"`
}

// Check implements pagetoken.Checker: the query reads Time as a timestamptz.
func (p *terminalPosition) Check() error { return pagetoken.CheckUnixMicro(p.Time) }

func (api adminAPI) SetStoreSettings(ctx context.Context, req *connect.Request[posv1.SetStoreSettingsRequest]) (*connect.Response[posv1.SetStoreSettingsResponse], error) {
	a := api.a
	s := req.Msg.GetSettings()
	var v rpcerr.Violations
	if err := checkStoreID(s.GetStoreId()); err != nil {
		v.Add("settings.store_id", err.Error())
	}
	var afterUS *int64
	if d := s.GetEscalateAfter(); d != nil {
		after := d.AsDuration()
		if !d.IsValid() || after < time.Second || after > maxEscalateAfter {
			v.Addf("settings.escalate_after", "must be between 1s and %s, got %s", maxEscalateAfter, after)
		}
		us := after.Microseconds()
		afterUS = &us
	}
	if err := v.Err(); err != nil {
		return nil, a.fail(ctx, "", err)
	}
	if err := a.storesAtInventory(ctx, []string{s.GetStoreId()}, func(int) string { return "settings.store_id" }); err != nil {
		return nil, a.fail(ctx, "", err)
	}
	out, err := scanSettings(a.db.QueryRow(ctx, `
		INSERT INTO store_settings (store_id, escalate_after, update_time)
		VALUES ($1, $2::bigint * interval '1 microsecond', now())
		ON CONFLICT (store_id) DO UPDATE SET escalate_after = excluded.escalate_after, update_time = now()
		RETURNING `+settingsColumns, s.GetStoreId(), afterUS))
	if err != nil {
		return nil, a.internal(ctx, "set store settings", err)
	}
	a.log.InfoContext(ctx, "store settings changed", "store_id", s.GetStoreId(), "escalate_after", s.GetEscalateAfter().AsDuration(), "by", adminName(ctx))
	return connect.NewResponse(&posv1.SetStoreSettingsResponse{Settings: out}), nil
}

func (api adminAPI) GetStoreSettings(ctx context.Context, req *connect.Request[posv1.GetStoreSettingsRequest]) (*connect.Response[posv1.GetStoreSettingsResponse], error) {
	a := api.a
	store := req.Msg.GetStoreId()
	if err := checkStoreID(store); err != nil {
		return nil, a.fail(ctx, "", rpcerr.Invalid("store_id", err.Error()))
	}
	out, err := scanSettings(a.db.QueryRow(ctx, `SELECT `+settingsColumns+` FROM store_settings WHERE store_id = $1`, store))
	if errors.Is(err, pgx.ErrNoRows) {
		out, err = &posv1.StoreSettings{StoreId: store}, nil
	}
	if err != nil {
		return nil, a.internal(ctx, "read store settings", err)
	}
	return connect.NewResponse(&posv1.GetStoreSettingsResponse{Settings: out}), nil
}

const settingsColumns = `store_id, (extract(epoch FROM escalate_after) * 1000000)::bigint, update_time`

func scanSettings(row pgx.Row) (*posv1.StoreSettings, error) {
	var (
		s       posv1.StoreSettings
		afterUS *int64
		updated time.Time
	)
	if err := row.Scan(&s.StoreId, &afterUS, &updated); err != nil {
		return nil, err
	}
	if afterUS != nil {
		s.EscalateAfter = durationpb.New(time.Duration(*afterUS) * time.Microsecond)
	}
	s.UpdateTime = timestamppb.New(updated)
	return &s, nil
}

const terminalColumns = `id, name, store_ids, create_time, revoke_time, last_seen_time`

func scanTerminal(row pgx.Row) (*posv1.Terminal, error) {
	var (
		t             posv1.Terminal
		created       time.Time
		revoked, seen *time.Time
	)
	if err := row.Scan(&t.Id, &t.Name, &t.StoreIds, &created, &revoked, &seen); err != nil {
		return nil, err
	}
	t.CreateTime = timestamppb.New(created)
	if revoked != nil {
		t.RevokeTime = timestamppb.New(*revoked)
	}
	if seen != nil {
		t.LastSeenTime = timestamppb.New(*seen)
	}
	return &t, nil
}

// adminName is the calling admin, for logs.
func adminName(ctx context.Context) string {
	if c, ok := callerFrom(ctx); ok {
		return c.principal.Actor()
	}
	return ""
}
