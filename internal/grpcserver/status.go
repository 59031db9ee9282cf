package grpcserver

import (
	"context"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
	logger.ErrorContext(ctx, "internal error", "grpc.method", method, "err", err)
	return status.Error(codes.Internal, "internal error")
}
