package embedded

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

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
