package embedded

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"

	"github.com/soheilhy/cmux"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"

	"github.com/etcdbr/etcdbr/internal/embeddedtest"
)

// TestCloseLogsNoErrors: etcd logs every listener that a stop closes as a failure, at error
// level with a stack trace (and the gRPC server on the client port with two warnings). After
// Close those lines are at debug level, without a stack, and the configuration's logger is
// etcd's own again (for the next start).
func TestCloseLogsNoErrors(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.DebugLevel)
	lg := zap.New(core, zap.AddStacktrace(zapcore.ErrorLevel)) // stack traces as etcd's default logger
	cfg := embeddedtest.NewConfig(t)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)

	for range 2 { // the second start gets the same logger, wrapped once
		ctx, cancel := context.WithTimeout(context.Background(), embeddedtest.StartTimeout)
		e, err := Start(ctx, cfg, embeddedtest.Logger(t))
		cancel()
		require.NoError(t, err)
		assert.Same(t, lg, cfg.GetLogger(), "the configuration keeps its logger")
		_, err = e.Client().Put(context.Background(), "k", "v")
		require.NoError(t, err)
		e.Close()
	}

	ended := logs.FilterMessage(serveEndedMsg).All()
	require.NotEmpty(t, ended, "etcd logged its listeners closing")
	for _, l := range ended {
		assert.Equal(t, zapcore.DebugLevel, l.Level, "%s: %v", l.Message, l.ContextMap())
		assert.Empty(t, l.Stack)
	}
	grpcStopped := logs.FilterMessage("stopped insecure grpc server due to error").All()
	require.NotEmpty(t, grpcStopped, "etcd logged its gRPC server stopping")
	for _, l := range logs.All() {
		if _, ok := stopMessages[l.Message]; ok {
			assert.Equal(t, zapcore.DebugLevel, l.Level, "%s: %v", l.Message, l.ContextMap())
		}
	}
	for _, l := range logs.FilterLevelExact(zapcore.ErrorLevel).All() {
		t.Errorf("etcd logged an error: %s %v", l.Message, l.ContextMap())
	}
}

// TestStopLogsPrecise: only the messages of a closed server or listener, with the error that
// says so, and only once a stop began, go down to debug level; any other error keeps its
// level, and is not taken for a stop's.
func TestStopLogsPrecise(t *testing.T) {
	t.Parallel()
	closedAccept := &net.OpError{Op: "accept", Net: "tcp", Err: net.ErrClosed}
	refused := &net.OpError{Op: "listen", Net: "tcp", Err: errors.New("address already in use")}
	cases := []struct {
		name     string
		msg      string
		level    zapcore.Level
		err      error
		stopping bool
		want     zapcore.Level
	}{
		{"http server closed by the stop", serveEndedMsg, zapcore.ErrorLevel, http.ErrServerClosed, true, zapcore.DebugLevel},
		{"cmux closed by the stop", serveEndedMsg, zapcore.ErrorLevel, cmux.ErrServerClosed, true, zapcore.DebugLevel},
		{"cmux listener closed by the stop", serveEndedMsg, zapcore.ErrorLevel, cmux.ErrListenerClosed, true, zapcore.DebugLevel},
		{"grpc server stopped by the stop", serveEndedMsg, zapcore.ErrorLevel, grpc.ErrServerStopped, true, zapcore.DebugLevel},
		{"serving ended before it began", serveEndedMsg, zapcore.ErrorLevel, errors.New("server is stopping"), true, zapcore.DebugLevel},
		{"accept on a closed listener", serveEndedMsg, zapcore.ErrorLevel, fmt.Errorf("serve: %w", closedAccept), true, zapcore.DebugLevel},
		{"grpc warning on a closed listener", "stopped insecure grpc server due to error", zapcore.WarnLevel, closedAccept, true, zapcore.DebugLevel},
		{"another error during the stop", serveEndedMsg, zapcore.ErrorLevel, refused, true, zapcore.ErrorLevel},
		{"no error during the stop", serveEndedMsg, zapcore.ErrorLevel, nil, true, zapcore.ErrorLevel},
		{"a closed server before any stop", serveEndedMsg, zapcore.ErrorLevel, http.ErrServerClosed, false, zapcore.ErrorLevel},
		{"another message with a closed error", "some other failure", zapcore.ErrorLevel, http.ErrServerClosed, true, zapcore.ErrorLevel},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.DebugLevel)
			calls := newClientCalls()
			lg := zap.New(stopLogCore{Core: core, calls: calls}, zap.AddStacktrace(zapcore.ErrorLevel)).With(zap.String("name", "m1"))
			if tc.stopping {
				calls.stop()
			}
			if ce := lg.Check(tc.level, tc.msg); ce != nil {
				ce.Write(zap.Error(tc.err))
			}
			all := logs.All()
			require.Len(t, all, 1)
			assert.Equal(t, tc.want, all[0].Level)
			// The logger's stack trace on error lines: a stop message during a stop has its
			// level set after the logger took its decision, and goes without one.
			_, decidedLate := stopMessages[tc.msg]
			decidedLate = decidedLate && tc.stopping
			assert.Equal(t, tc.want == zapcore.ErrorLevel && !decidedLate, all[0].Stack != "", "stack trace")
			assert.Equal(t, "m1", all[0].ContextMap()["name"], "the logger's fields are kept")
		})
	}

	// etcd's level still decides: at warn, a stop's debug line is dropped, another error is not.
	core, logs := observer.New(zapcore.WarnLevel)
	calls := newClientCalls()
	calls.stop()
	lg := zap.New(stopLogCore{Core: core, calls: calls})
	lg.Error(serveEndedMsg, zap.Error(http.ErrServerClosed))
	lg.Error(serveEndedMsg, zap.Error(refused))
	require.Len(t, logs.All(), 1)
	assert.Equal(t, refused.Error(), logs.All()[0].ContextMap()["error"])
}
