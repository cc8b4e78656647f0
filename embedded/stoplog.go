package embedded

import (
	"errors"
	"net"
	"net/http"

	"github.com/soheilhy/cmux"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
)

// serveEndedMsg is what etcd logs, at error level and with a stack trace, when
// one of its servers stops serving: on every stop, each client, peer and metrics
// listener ends that way ("http: Server closed", "mux: server closed", "use of
// closed network connection").
const serveEndedMsg = "setting up serving from embedded etcd failed."

// stopMessages are what etcd logs when a stop closes its listeners, with the level
// it logs them at: serveEndedMsg, and the warnings of a gRPC server that shares
// the client port with HTTP when its listener closes ("accept tcp ...: use of
// closed network connection").
var stopMessages = map[string]zapcore.Level{
	serveEndedMsg: zapcore.ErrorLevel,
	"stopping insecure grpc server due to error": zapcore.WarnLevel,
	"stopped insecure grpc server due to error":  zapcore.WarnLevel,
	"stopping secure grpc server due to error":   zapcore.WarnLevel,
	"stopped secure grpc server due to error":    zapcore.WarnLevel,
}

// serveStoppingErr is the text of the error etcd's client serving returns when the
// server began to stop before it served (embed's serve.go makes it with errors.New:
// there is no value to compare with).
const serveStoppingErr = "server is stopping"

// closedByStop reports whether err is what a server or listener returns once it
// was closed: what etcd's stop does to each of them (a gRPC server stopped before
// its listener ended included).
func closedByStop(err error) bool {
	return errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, cmux.ErrServerClosed) || errors.Is(err, cmux.ErrListenerClosed) ||
		errors.Is(err, grpc.ErrServerStopped) || err.Error() == serveStoppingErr
}

// quietStopLogs makes etcd log stopMessages at debug level when their error is a
// closed server or listener (closedByStop) and calls was stopped, which Close
// does before it stops etcd: a listener closed by the stop is no failure. Any
// other error keeps its level, as do these messages before a stop. It gives etcd
// (through cfg, which embed.StartEtcd copies) its usual logger wrapped for that,
// and returns a function that puts cfg's logger back once StartEtcd returned.
func quietStopLogs(cfg *embed.Config, calls *clientCalls) (restore func(), err error) {
	if cfg.ZapLoggerBuilder == nil || cfg.GetLogger() == nil {
		// Sets up etcd's logger from cfg, as StartEtcd would.
		if err := cfg.Validate(); err != nil {
			return nil, err
		}
	}
	builder, lg := cfg.ZapLoggerBuilder, cfg.GetLogger()
	if lg == nil { // a builder that set no logger
		return func() {}, nil
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return stopLogCore{Core: c, calls: calls}
	})))
	return func() {
		cfg.ZapLoggerBuilder = builder
		_ = builder(cfg) // sets cfg's logger back to lg; it succeeded before
	}, nil
}

// stopLogCore lowers stopMessages to debug level once calls was stopped, when
// their error is closedByStop.
type stopLogCore struct {
	zapcore.Core
	calls *clientCalls
}

func (c stopLogCore) With(fields []zapcore.Field) zapcore.Core {
	return stopLogCore{Core: c.Core.With(fields), calls: c.calls}
}

// Check leaves the level of a stop message to Write, which sees its error: the
// entry is checked in at debug level, so that the logger adds no stack trace
// (it adds one by the level a core checked the entry in at).
func (c stopLogCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	level, ok := stopMessages[ent.Message]
	if !ok || ent.Level != level || !c.calls.stopping() {
		return c.Core.Check(ent, ce)
	}
	if !c.Core.Enabled(level) { // nor any level below
		return ce
	}
	ent.Level = zapcore.DebugLevel
	return ce.AddCore(ent, stopEntryCore{Core: c.Core, level: level})
}

// stopEntryCore writes one stop message that stopLogCore checked in: at debug
// level when its error is closedByStop, at level otherwise (without the stack
// trace the logger would have added to an error).
type stopEntryCore struct {
	zapcore.Core
	level zapcore.Level
}

func (c stopEntryCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	ent.Level = c.level
	for _, f := range fields {
		if err, ok := f.Interface.(error); ok && f.Type == zapcore.ErrorType && closedByStop(err) {
			ent.Level = zapcore.DebugLevel
			break
		}
	}
	if ce := c.Core.Check(ent, nil); ce != nil {
		ce.Write(fields...)
	}
	return nil
}
