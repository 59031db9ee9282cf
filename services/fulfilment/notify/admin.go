package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/pagetoken"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

// Admin is FulfilmentAdminService: the dead-letter list of customer notifications and their
// replay. The fulfilment service registers it on its gRPC server with Register; the edge lets
// only admin tokens reach it.
type Admin struct {
	fulfilmentv1.UnimplementedFulfilmentAdminServiceServer
	pool *pgxpool.Pool
	log  *slog.Logger
}

// NewAdmin returns the admin API over the notifications in pool's schema. A nil logger
// discards.
func NewAdmin(pool *pgxpool.Pool, logger *slog.Logger) *Admin {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Admin{pool: pool, log: logger.With("component", "notify")}
}

// Register serves FulfilmentAdminService on srv.
func (a *Admin) Register(srv grpc.ServiceRegistrar) {
	fulfilmentv1.RegisterFulfilmentAdminServiceServer(srv, a)
}

// deadPosition is the keyset position of ListFailedNotifications: newest first.
type deadPosition struct {
	FailTime time.Time `json:"t"`
	ID       string    `json:"id"`
}

// Check implements pagetoken.Checker: the query reads ID as a uuid, in the canonical form
// the list wrote (uuid.Parse also takes urn:uuid:…, which Postgres refuses).
func (p *deadPosition) Check() error {
	id, err := uuid.Parse(p.ID)
	if err == nil && id.String() != p.ID {
		err = fmt.Errorf("id %q is not in canonical form", p.ID)
	}
	return err
}

// ListFailedNotifications lists dead letters, newest first.
func (a *Admin) ListFailedNotifications(ctx context.Context, req *fulfilmentv1.ListFailedNotificationsRequest) (*fulfilmentv1.ListFailedNotificationsResponse, error) {
	size, err := pagetoken.PageSize(req.GetPageSize(), 50, 200)
	if err != nil {
		return nil, err
	}
	var pos deadPosition
	after, err := pagetoken.Decode(req, &pos)
	if err != nil {
		return nil, err
	}
	rows, err := a.pool.Query(ctx, `
		SELECT id::text, order_id, channel, kind, attempts, last_error, fail_time
		FROM notifications
		WHERE state = 'dead' AND (NOT $1 OR (fail_time, id) < ($2, $3::uuid))
		ORDER BY fail_time DESC, id DESC
		LIMIT $4`, after, pos.FailTime, nullUUID(pos.ID), size+1)
	if err != nil {
		return nil, a.internal(ctx, "list dead notifications", err)
	}
	res := &fulfilmentv1.ListFailedNotificationsResponse{}
	var last deadPosition
	for rows.Next() {
		var n fulfilmentv1.FailedNotification
		var failTime time.Time
		if err := rows.Scan(&n.Id, &n.OrderId, &n.Channel, &n.Kind, &n.Attempts, &n.LastError, &failTime); err != nil {
			rows.Close()
			return nil, a.internal(ctx, "scan dead notification", err)
		}
		if len(res.Notifications) == size {
			res.NextPageToken = pagetoken.Encode(req, last)
			break
		}
		n.FailTime = timestamppb.New(failTime)
		res.Notifications = append(res.Notifications, &n)
		last = deadPosition{FailTime: failTime, ID: n.Id}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, a.internal(ctx, "list dead notifications", err)
	}
	return res, nil
}

// ReplayNotification makes a dead letter due again now, with a fresh allowance of attempts,
// and wakes the dispatchers. Its id stays the same, so receivers can still drop a duplicate.
func (a *Admin) ReplayNotification(ctx context.Context, req *fulfilmentv1.ReplayNotificationRequest) (*fulfilmentv1.ReplayNotificationResponse, error) {
	parsed, err := uuid.Parse(req.GetNotificationId())
	if err != nil {
		return nil, rpcerr.Invalid("notification_id", "must be a notification id (a UUID)")
	}
	id := parsed.String() // canonical: uuid.Parse also takes urn:uuid:…, which Postgres refuses
	err = pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		var state string
		err := tx.QueryRow(ctx, `SELECT state FROM notifications WHERE id = $1 FOR UPDATE`, id).Scan(&state)
		if errors.Is(err, pgx.ErrNoRows) {
			return rpcerr.NotFound("notification", id)
		}
		if err != nil {
			return err
		}
		if state != "dead" {
			return rpcerr.FailedPrecondition("notification %q is %s; only failed (dead) notifications can be replayed", id, state)
		}
		_, err = tx.Exec(ctx, `
			UPDATE notifications
			SET state = 'pending', attempts = 0, next_attempt_at = now(), fail_time = NULL, replays = replays + 1
			WHERE id = $1`, id)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `SELECT pg_notify(`+channelSQL+`, '')`)
		return err
	})
	if err != nil {
		if rpcerr.IsStatus(err) {
			return nil, err
		}
		return nil, a.internal(ctx, "replay notification", err)
	}
	a.log.InfoContext(ctx, "dead notification replayed", "notification_id", id)
	return &fulfilmentv1.ReplayNotificationResponse{}, nil
}

func (a *Admin) internal(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	a.log.ErrorContext(ctx, "notify admin: "+what, "err", err)
	return status.Error(codes.Internal, "internal error")
}

func nullUUID(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// ForgetOrders deletes every notification of the orders given, whatever its state, in tx, and
// returns how many: each carries the shopper's email address (recipient) and a copy of the
// order. Fulfilment calls it when it erases or redacts those orders' personal data.
func ForgetOrders(ctx context.Context, tx pgx.Tx, orderIDs []string) (int64, error) {
	if len(orderIDs) == 0 {
		return 0, nil
	}
	tag, err := tx.Exec(ctx, `DELETE FROM notifications WHERE order_id = ANY ($1::text[])`, orderIDs)
	if err != nil {
		return 0, fmt.Errorf("delete the notifications of %d orders: %w", len(orderIDs), err)
	}
	return tag.RowsAffected(), nil
}
