package embedded

import (
	"log/slog"

	"go.etcd.io/etcd/client/pkg/v3/logutil"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/etcdbr/etcdbr/internal/slogzap"
)

// Component is the value of the "component" attribute of etcd's log lines that
// LogTo routes, which tells them apart from etcdbr's own.
const Component = "etcd"

// LogTo makes etcd log through h instead of its own zap logger, so that its lines
// have the program's format and go where the program's go: it sets
// cfg.ZapLoggerBuilder (embed.Config.Validate and embed.StartEtcd build the
// logger with it). Each line carries component=etcd, its zap fields as
// attributes, and the zap logger's name and the caller (slogzap.LoggerKey,
// slogzap.CallerKey). etcd's --log-level (cfg.LogLevel, read when the logger is
// built) decides which lines reach h, so give h the lowest level (debug).
// Stack traces are kept for DPANIC, PANIC and FATAL only: on error lines etcd's
// logger adds one, which a one-line format cannot show readably.
//
// etcd's own logger stays, and LogTo returns false, when cfg.LogOutputs names
// somewhere else than standard error (a file, stdout, systemd/journal): etcd
// then writes there in its own --log-format, as it was told.
func LogTo(cfg *embed.Config, h slog.Handler) bool {
	for _, out := range cfg.LogOutputs {
		if out != embed.DefaultLogOutput && out != embed.StdErrLogOutput {
			return false
		}
	}
	h = h.WithAttrs([]slog.Attr{slog.String("component", Component)})
	cfg.ZapLoggerBuilder = func(cfg *embed.Config) error {
		level := zap.NewAtomicLevelAt(logutil.ConvertToZapLevel(cfg.LogLevel))
		lg := zap.New(slogzap.NewCore(h, level), zap.AddCaller(), zap.AddStacktrace(zapcore.DPanicLevel))
		return embed.NewZapLoggerBuilder(lg)(cfg)
	}
	return true
}
