package embedded

import (
	"context"
	"errors"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// errStopping ends the client calls that clientCalls cuts off. Unavailable tells
// etcd's clients that the member will be back: clientv3 reconnects a watch on it
// (kube-apiserver's watch cache resumes or relists) instead of closing the watch
// channel, which it does on Canceled, the code etcd's Watch itself returns when
// its context ends.
var errStopping = status.Error(codes.Unavailable, "etcd is stopping")

// waitingMethods are the unary methods that wait for other clients (a lock to be
// released, a leader to resign), not for this member's own work.
var waitingMethods = map[string]bool{
	"/v3lockpb.Lock/Lock":             true,
	"/v3electionpb.Election/Campaign": true,
}

// clientCalls ends the calls of etcd's gRPC clients that would otherwise hold up
// a stop: every stream (watches, lease keep-alives, election observers,
// snapshots) and the unary calls in waitingMethods. Such a call never ends by
// itself, and etcd's Close waits for it in grpc.Server.GracefulStop for its
// whole request timeout (5 s + 2 election timeouts, 7 s by default) before it
// closes the connections anyway.
//
// Its interceptors give each such call a context that stop cancels; the call's
// handler returns and the client gets errStopping. Other unary calls (Range,
// Put, Txn, ...) are left alone: etcd's graceful stop lets them finish.
type clientCalls struct {
	mu      sync.Mutex
	stopped bool
	next    uint64
	cancels map[uint64]context.CancelCauseFunc
}

func newClientCalls() *clientCalls {
	return &clientCalls{cancels: make(map[uint64]context.CancelCauseFunc)}
}

// serverOptions returns the interceptors to add to etcd's gRPC servers.
func (c *clientCalls) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainStreamInterceptor(c.stream),
		grpc.ChainUnaryInterceptor(c.unary),
	}
}

// stop ends every call it tracks and refuses the ones that start after it.
// It does not wait for their handlers to return: etcd's Close does.
func (c *clientCalls) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopped = true
	for id, cancel := range c.cancels {
		cancel(errStopping)
		delete(c.cancels, id)
	}
}

// stopping reports whether stop was called.
func (c *clientCalls) stopping() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopped
}

// track returns a context for a call with parent ctx that stop cancels, and a
// function to call when the call ended; it returns errStopping once stop was
// called.
func (c *clientCalls) track(ctx context.Context) (context.Context, func(), error) {
	ctx, cancel := context.WithCancelCause(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		cancel(errStopping)
		return nil, nil, errStopping
	}
	id := c.next
	c.next++
	c.cancels[id] = cancel
	return ctx, func() {
		c.mu.Lock()
		delete(c.cancels, id)
		c.mu.Unlock()
		cancel(nil)
	}, nil
}

// result is the error a tracked call returns: errStopping if stop ended it,
// whatever the handler made of its cancelled context.
func result(ctx context.Context, err error) error {
	if err != nil && errors.Is(context.Cause(ctx), errStopping) {
		return errStopping
	}
	return err
}

func (c *clientCalls) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, done, err := c.track(ss.Context())
	if err != nil {
		return err
	}
	defer done()
	return result(ctx, handler(srv, &streamWithContext{ServerStream: ss, ctx: ctx}))
}

func (c *clientCalls) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !waitingMethods[info.FullMethod] {
		return handler(ctx, req)
	}
	ctx, done, err := c.track(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	resp, err := handler(ctx, req)
	return resp, result(ctx, err)
}

// streamWithContext is a server stream with another context.
type streamWithContext struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *streamWithContext) Context() context.Context { return s.ctx }
