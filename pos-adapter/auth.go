package posadapter

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/metadata"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/edge"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	"github.com/handoff-dev/handoff/proto/handoff/pos/v1/posv1connect"
)

// credentialPrefix starts every terminal credential; anything else is taken for a JWT.
const credentialPrefix = "hot_"

// newTerminalCredential makes a terminal id and its credential "hot_<id>_<secret>", and the
// hash to keep. The id is lower-case base32 (no underscore), the secret 32 random bytes in hex.
func newTerminalCredential() (id, credential string, hash []byte, err error) {
	var idBytes [10]byte
	var secret [32]byte
	if _, err := rand.Read(idBytes[:]); err != nil {
		return "", "", nil, fmt.Errorf("terminal id: %w", err)
	}
	if _, err := rand.Read(secret[:]); err != nil {
		return "", "", nil, fmt.Errorf("terminal secret: %w", err)
	}
	id = "trm" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(idBytes[:]))
	s := hex.EncodeToString(secret[:])
	sum := sha256.Sum256([]byte(s))
	return id, credentialPrefix + id + "_" + s, sum[:], nil
}

// parseTerminalCredential splits "hot_<id>_<secret>".
func parseTerminalCredential(cred string) (id, secret string, ok bool) {
	rest, ok := strings.CutPrefix(cred, credentialPrefix)
	if !ok {
		return "", "", false
	}
	id, secret, ok = strings.Cut(rest, "_")
	return id, secret, ok && id != "" && len(secret) == 64
}

// caller is who is calling, as established by authInterceptor.
type caller struct {
	principal auth.Principal
	// terminal is the terminal id for a terminal credential, "" for a JWT caller.
	terminal string
	// authorization is a JWT caller's Authorization header, forwarded as it is.
	authorization string
}

// reader is the identity acknowledgements are recorded under.
func (c caller) reader() string {
	if c.terminal != "" {
		return c.terminal
	}
	return c.principal.Actor()
}

type callerKey struct{}

func callerFrom(ctx context.Context) (caller, bool) {
	c, ok := ctx.Value(callerKey{}).(caller)
	return c, ok
}

// authInterceptor authenticates every TerminalService and TerminalAdminService call before
// its handler runs: a terminal credential or a staff/admin JWT for the first, an admin JWT for
// the second. The handler then checks the store (forStore).
type authInterceptor struct{ a *Adapter }

func (i authInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		ctx, err := i.a.admitOnce(ctx, req.Peer().Addr, req.Spec().Procedure, req.Header().Get("Authorization"))
		if err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (i authInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i authInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx, err := i.a.admitOnce(ctx, conn.Peer().Addr, conn.Spec().Procedure, conn.RequestHeader().Get("Authorization"))
		if err != nil {
			return err
		}
		return next(ctx, conn)
	}
}

var policy = auth.DefaultPolicy()

// admitOnce admits a call unless edge.AdmitBeforeBody has.
func (a *Adapter) admitOnce(ctx context.Context, peerAddr, procedure, authorization string) (context.Context, error) {
	if edge.Admitted(ctx) {
		return ctx, nil
	}
	return a.admit(ctx, ctx, peerAddr, procedure, authorization)
}

// admit authenticates a call from peerAddr, charging its address for a refusal (refusedAuth).
// An address over its refusals is told to wait, unless its credential is one this process has
// seen working (credentialCache; read again if its row is old) or a token (a signature
// check). A store's terminals and staff share its one public address (NAT), and made-up
// credentials from it must not lock them out; only unknown credentials, each a database read,
// wait.
//
// waiting bounds what the check may wait for (an identity provider's new key): ctx, or ctx
// bounded by the call's own timeout when it is admitted before Connect applies that.
func (a *Adapter) admit(ctx, waiting context.Context, peerAddr, procedure, authorization string) (context.Context, error) {
	done, ok, wait := a.refusedAuth.Attempt(peerAddr)
	if !ok {
		if ctx, err := a.authenticate(ctx, waiting, procedure, authorization, false); err == nil {
			return ctx, nil
		}
		return ctx, edge.RateLimited("refused credentials from this address", wait)
	}
	ctx, err := a.authenticate(ctx, waiting, procedure, authorization, true)
	code := connect.CodeOf(err)
	// A caller that stopped waiting for an identity provider's new key pays too: else tokens
	// naming made-up keys, sent with short deadlines, would be checked for free.
	done(err != nil && (code == connect.CodeUnauthenticated || code == connect.CodePermissionDenied ||
		code == connect.CodeDeadlineExceeded || code == connect.CodeCanceled))
	return ctx, err
}

// authenticate finds the caller. Without lookup, a terminal credential is read from the
// database only if this process has seen it work before (credentialCache.known); any other is
// refused (errNeedsLookup) unread.
func (a *Adapter) authenticate(ctx, waiting context.Context, procedure, authorization string, lookup bool) (context.Context, error) {
	token, err := auth.BearerToken(authorization)
	if err == nil && strings.HasPrefix(token, credentialPrefix) {
		if service := auth.ServiceOf(procedure); service != posv1connect.TerminalServiceName {
			return ctx, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s needs an admin token; this is a terminal credential", service))
		}
		c, err := a.terminalCaller(ctx, token, lookup)
		if err != nil {
			return ctx, err
		}
		return context.WithValue(auth.NewContext(ctx, c.principal), callerKey{}, c), nil
	}
	p, ok, err := policy.Authorize(waiting, a.keys, procedure, authorization)
	if err != nil {
		return ctx, edge.ConnectError(err)
	}
	if !ok {
		return ctx, connect.NewError(connect.CodeUnauthenticated, errors.New("this call needs a terminal credential or a staff token"))
	}
	c := caller{principal: p, authorization: authorization}
	return context.WithValue(auth.NewContext(ctx, p), callerKey{}, c), nil
}

var (
	errBadCredential = connect.NewError(connect.CodeUnauthenticated, errors.New("terminal credential rejected: unknown, malformed or revoked"))
	errNeedsLookup   = connect.NewError(connect.CodeUnauthenticated, errors.New("terminal credential not checked: it needs a lookup"))
)

// terminalCaller checks a terminal credential against the terminals table, or against the row
// as read less than Config.CredentialCacheTTL ago (see credentialCache: a revocation takes
// effect at once all the same). Without lookup, one never seen working is errNeedsLookup.
func (a *Adapter) terminalCaller(ctx context.Context, cred string, lookup bool) (caller, error) {
	id, secret, ok := parseTerminalCredential(cred)
	if !ok {
		return caller{}, errBadCredential
	}
	sum := sha256.Sum256([]byte(secret))
	now := time.Now()
	if t, ok := a.credentials.get(id, now); ok {
		if subtle.ConstantTimeCompare(sum[:], t.hash[:]) != 1 {
			return caller{}, errBadCredential
		}
		return terminalCallerOf(id, slices.Clone(t.stores)), nil
	}
	if !lookup && !a.credentials.known(id, sum) {
		return caller{}, errNeedsLookup
	}
	gen := a.credentials.generation()
	var (
		stores  []string
		hash    []byte
		revoked *time.Time
	)
	err := a.db.QueryRow(ctx, `SELECT store_ids, credential_hash, revoke_time FROM terminals WHERE id = $1`, id).
		Scan(&stores, &hash, &revoked)
	if errors.Is(err, pgx.ErrNoRows) {
		a.credentials.proved(id, sum, false)
		return caller{}, errBadCredential
	}
	if err != nil {
		return caller{}, a.internal(ctx, "look up terminal", err)
	}
	if revoked != nil {
		a.credentials.proved(id, sum, false)
		return caller{}, errBadCredential
	}
	a.credentials.put(id, hash, stores, gen, now)
	if subtle.ConstantTimeCompare(sum[:], hash) != 1 {
		// Another secret presented for the terminal proves nothing about the one it has.
		return caller{}, errBadCredential
	}
	a.credentials.proved(id, sum, true)
	return terminalCallerOf(id, stores), nil
}

func terminalCallerOf(id string, stores []string) caller {
	return caller{principal: auth.Principal{Subject: id, Role: auth.RoleStaff, Stores: stores}, terminal: id}
}

// forStore checks, before anything else, that the caller may act for storeID.
func (a *Adapter) forStore(ctx context.Context, storeID string) (caller, error) {
	if storeID == "" {
		return caller{}, edge.ConnectError(rpcerr.Invalid("store_id", "required"))
	}
	// An id no store can have is refused as the admin API refuses it: a staff token minted
	// for a misspelt store would otherwise open a feed that stays empty for good.
	if err := checkStoreID(storeID); err != nil {
		return caller{}, edge.ConnectError(rpcerr.Invalid("store_id", err.Error()))
	}
	c, ok := callerFrom(ctx)
	if !ok {
		return caller{}, connect.NewError(connect.CodeUnauthenticated, errors.New("not authenticated"))
	}
	if _, err := auth.ForStore(ctx, storeID); err != nil {
		return caller{}, edge.ConnectError(err)
	}
	return c, nil
}

// Metadata the edges set on calls to the services, next to the bearer token: the store(s) a
// staff caller acts for (already checked here) and who acts, "kind:id", for histories and
// ledgers (fulfilment's and inventory's caller contract).
const (
	mdStaffStores = "x-handoff-staff-stores"
	mdActor       = "x-handoff-actor"
)

// actor is the caller as services record it: "terminal:<id>", or the token's "staff:<subject>"
// / "admin:<subject>".
func (c caller) actor() string {
	if c.terminal != "" {
		return "terminal:" + c.terminal
	}
	return c.principal.Actor()
}

// staffContext returns ctx carrying what a forwarded call to fulfilment presents: a staff JWT
// minted for this terminal and this one store (a JWT caller's own token instead), and the
// store and actor metadata.
func (a *Adapter) staffContext(ctx context.Context, c caller, storeID string) (context.Context, error) {
	authorization := c.authorization
	if c.terminal != "" {
		tok, err := a.staffTokens.get(a.keys, c.terminal, storeID, a.cfg.TokenTTL)
		if err != nil {
			return nil, a.internal(ctx, "mint staff token", err)
		}
		authorization = "Bearer " + tok
	}
	ctx = metadata.AppendToOutgoingContext(ctx, mdStaffStores, storeID, mdActor, c.actor())
	return auth.OutgoingContext(ctx, authorization), nil
}

// adminContext returns ctx carrying an admin JWT minted for one call to inventory's admin API
// on behalf of actor ("kind:id"), whose right to it the adapter has checked (the store, or a
// vendor's signature).
func (a *Adapter) adminContext(ctx context.Context, actor string) (context.Context, error) {
	tok, err := a.keys.Issue(auth.Principal{Subject: auth.DelegateSubject(actor), Role: auth.RoleAdmin}, a.cfg.TokenTTL)
	if err != nil {
		return nil, a.internal(ctx, "mint admin token", err)
	}
	ctx = metadata.AppendToOutgoingContext(ctx, mdActor, actor)
	return auth.OutgoingContext(ctx, "Bearer "+tok), nil
}

// internal logs an unexpected failure and returns the opaque error the client sees.
func (a *Adapter) internal(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return connect.NewError(connect.CodeCanceled, ctx.Err())
	}
	a.log.ErrorContext(ctx, what+" failed", "err", err)
	return connect.NewError(connect.CodeInternal, errors.New("internal error"))
}

// fail passes a status error through to the client and hides anything else.
func (a *Adapter) fail(ctx context.Context, what string, err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce
	}
	if rpcerr.IsStatus(err) {
		return edge.ConnectError(err)
	}
	return a.internal(ctx, what, err)
}

// mintedTokens keeps the staff token minted for each terminal and store while it has more
// than half its lifetime left, so a terminal's calls present one token (verified once by
// fulfilment, then remembered there) instead of a fresh one per call. Only the adapter ever
// holds these tokens, and it checks the terminal's credential (and revocation) on every call
// before forwarding, so reusing one grants nothing a new one would not.
type mintedTokens struct {
	mu sync.Mutex
	m  map[string]mintedToken
}

type mintedToken struct {
	token   string
	renewAt time.Time
}

// maxMintedTokens bounds the map; when full it starts again empty.
const maxMintedTokens = 8192

func (mt *mintedTokens) get(keys *auth.KeySet, terminal, storeID string, ttl time.Duration) (string, error) {
	key := terminal + "\x00" + storeID
	now := time.Now()
	mt.mu.Lock()
	t, ok := mt.m[key]
	mt.mu.Unlock()
	if ok && now.Before(t.renewAt) {
		return t.token, nil
	}
	tok, err := keys.Issue(auth.Principal{Subject: terminal, Role: auth.RoleStaff, Stores: []string{storeID}}, ttl)
	if err != nil {
		return "", err
	}
	mt.mu.Lock()
	if mt.m == nil || len(mt.m) >= maxMintedTokens {
		mt.m = make(map[string]mintedToken)
	}
	mt.m[key] = mintedToken{token: tok, renewAt: now.Add(ttl / 2)}
	mt.mu.Unlock()
	return tok, nil
}
