package embedded

import (
	"log/slog"

	"go.etcd.io/etcd/client/pkg/v3/logutil"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zapgrpc"
	"google.golang.org/grpc/grpclog"

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

// GRPCLogger returns a logger for gRPC's logs that writes them through etcd's
// logger in cfg (cfg.GetLogger, set up by ParseFlagsWith), named "grpc" (the
// slogzap.LoggerKey attribute), in the format of etcd's other lines instead of
// gRPC's own text on standard error: every line when etcd's --log-level is
// debug (as the etcd binary does), errors only otherwise, as gRPC's default
// logger lets through. gRPC's warnings are mostly its clients' reconnection
// attempts, etcdbr's own to the other members among them, which say again what
// etcd and etcdbr report. It returns nil when cfg has no logger.
//
// gRPC has one logger per process (grpclog.SetLoggerV2, which must be called
// before gRPC is used); it also logs for etcdbr's own clients.
func GRPCLogger(cfg *embed.Config) grpclog.LoggerV2 {
	lg := cfg.GetLogger()
	if lg == nil {
		return nil
	}
	lg = lg.Named("grpc").WithOptions(zap.WithCaller(false)) // the caller would be zapgrpc's
	if cfg.LogLevel != "debug" && zapcore.LevelOf(lg.Core()) < zapcore.ErrorLevel {
		lg = lg.WithOptions(zap.IncreaseLevel(zapcore.ErrorLevel))
	}
	return zapgrpc.NewLogger(lg)
}
