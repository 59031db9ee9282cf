package grpcserver

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/pgtext"
)

// A handler's error that is not a gRPC status is a failure of the server (a database or NATS
// error, a timeout of its own, a bug), not an answer to the caller. Left as it is, a network
// server would send it as Unknown with its text (SQL and all) to the caller, and an in-process
// channel would hand the caller the bare Go error. Every server instead logs it, with its
// method, and answers Internal "internal error". A call whose own context ended (the caller
// gave up or its deadline passed) is answered DeadlineExceeded or Canceled whatever the handler
// returned then, as the transport would. Statuses pass unchanged.

func unaryStatuses(logger *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		res, err := handler(ctx, req)
		return res, asStatus(ctx, logger, info.FullMethod, err)
	}
}

func streamStatuses(logger *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return asStatus(ss.Context(), logger, info.FullMethod, handler(srv, ss))
	}
}

// asStatus is what the caller of a call with context ctx gets for the handler's err.
func asStatus(ctx context.Context, logger *slog.Logger, method string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	if ctx.Err() != nil {
		// The caller's end, not the server's: not logged, and nothing of err is shown.
		return status.FromContextError(ctx.Err()).Err()
	}
	if pe := (*pgconn.PgError)(nil); errors.As(err, &pe) && (pe.Code == "22021" || pe.Code == "22P05") {
		// Text Postgres cannot store (a NUL, say) that the check of each request (pgtext) did
		// not see: still the caller's text, most likely, so not Internal.
		logger.WarnContext(ctx, "text refused by Postgres", "grpc.method", method, "err", err)
		return status.Error(codes.InvalidArgument, "the request holds text that cannot be stored (NUL characters, say)")
	}
	if databaseUnreachable(err) {
		logger.WarnContext(ctx, "database unreachable", "grpc.method", method, "err", err)
		return status.Error(codes.Unavailable, "the service's database is unavailable; try again")
	}
	logger.ErrorContext(ctx, "internal error", "grpc.method", method, "err", err)
	return status.Error(codes.Internal, "internal error")
}

// databaseUnreachable reports an error of a database that could not be reached: no connection
// to run the statement on, so nothing was done. The copy cannot serve now, and a retry (here,
// once it is back, or at another copy) may well succeed, which is what Unavailable tells a
// client; Internal would say the server is broken. A connection lost or ended mid-statement is
// not among them, a server's shutdown (57P01) included, which can end a COMMIT whose record is
// already on disk: whether the write happened is not known, so a retry could do it twice.
func databaseUnreachable(err error) bool {
	if ce := (*pgconn.ConnectError)(nil); errors.As(err, &ce) {
		return true
	}
	if pe := (*pgconn.PgError)(nil); errors.As(err, &pe) {
		// Refusing a connection: class 08 but a protocol violation, which can come at any time,
		// and the server starting up.
		return strings.HasPrefix(pe.Code, "08") && pe.Code != "08P01" || pe.Code == "57P03"
	}
	return false
}

// UnaryText is the check every server of New and InProcess makes of each request, for tests
// that serve a service on a plain grpc.Server: it refuses, naming the field, a request holding
// text Postgres cannot store (pgtext.Check).
var UnaryText grpc.UnaryServerInterceptor = unaryText

// unaryText refuses a request holding text Postgres cannot store (pgtext.Check).
func unaryText(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if m, ok := req.(proto.Message); ok {
		if err := pgtext.Check(m); err != nil {
			return nil, err
		}
	}
	return handler(ctx, req)
}

// streamText refuses each message of a stream holding text Postgres cannot store.
func streamText(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, textStream{ss})
}

type textStream struct{ grpc.ServerStream }

func (s textStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if pm, ok := m.(proto.Message); ok {
		return pgtext.Check(pm)
	}
	return nil
}
