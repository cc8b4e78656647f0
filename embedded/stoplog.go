package embedded

import (
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
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

// quietStopLogs makes etcd log stopMessages at debug level once calls was
// stopped, which Close does before it stops etcd: a listener closed by the stop
// is no failure. It gives etcd (through cfg, which embed.StartEtcd copies) its
// usual logger wrapped for that, and returns a function that puts cfg's logger
// back once StartEtcd returned.
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

// stopLogCore lowers stopMessages to debug level once calls was stopped. The
// logger adds a stack trace by the level the core checked the entry at.
type stopLogCore struct {
	zapcore.Core
	calls *clientCalls
}

func (c stopLogCore) With(fields []zapcore.Field) zapcore.Core {
	return stopLogCore{Core: c.Core.With(fields), calls: c.calls}
}

func (c stopLogCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if level, ok := stopMessages[ent.Message]; ok && ent.Level == level && c.calls.stopping() {
		ent.Level = zapcore.DebugLevel
	}
	return c.Core.Check(ent, ce)
}
