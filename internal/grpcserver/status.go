package grpcserver

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A handler's error that is not a gRPC status is a failure of the server (a database or NATS
// error, a bug), not an answer to the caller. Left as it is, a network server would send it as
// Unknown with its text (SQL and all) to the caller, and an in-process channel would hand the
// caller the bare Go error. Every server instead logs it, with its method, and answers Internal
// "internal error"; a context that ended is DeadlineExceeded or Canceled, as the transport
// would say. Statuses pass unchanged.

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

func asStatus(ctx context.Context, logger *slog.Logger, method string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return status.FromContextError(err).Err()
	}
	logger.ErrorContext(ctx, "internal error", "grpc.method", method, "err", err)
	return status.Error(codes.Internal, "internal error")
}
