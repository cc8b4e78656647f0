package embedded

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"go.etcd.io/etcd/client/pkg/v3/logutil"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zapgrpc"
	"google.golang.org/grpc/grpclog"

	"github.com/etcdbr/etcdbr/internal/diskspace"
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
	own := h
	h = h.WithAttrs([]slog.Attr{slog.String("component", Component)})
	cfg.ZapLoggerBuilder = func(cfg *embed.Config) error {
		level := zap.NewAtomicLevelAt(logutil.ConvertToZapLevel(cfg.LogLevel))
		lg := zap.New(slogzap.NewCore(h, level), zap.AddCaller(), zap.AddStacktrace(zapcore.DPanicLevel),
			zap.WithFatalHook(fatalHook{lg: slog.New(own), cfg: cfg}))
		return embed.NewZapLoggerBuilder(lg)(cfg)
	}
	return true
}

// fatalHook runs when etcd logs a FATAL line, which ends the process: when the line's
// error is a full or read-only file system (etcd stops on a WAL or db write that fails), it
// says in etcdbr's own words which directory, that the data dir is kept as it is (a full
// disk is no reason to restore), and what to do; then it exits with status 1, as zap's
// default does.
type fatalHook struct {
	lg *slog.Logger
	// cfg is etcd's configuration, whose data dir is read when etcd stops (the logger is
	// built before the data dir is set).
	cfg *embed.Config
}

// OnWrite is called after etcd's FATAL line was written.
func (f fatalHook) OnWrite(_ *zapcore.CheckedEntry, fields []zapcore.Field) {
	var cause error
	for _, fl := range fields {
		if err, ok := fl.Interface.(error); ok && fl.Type == zapcore.ErrorType {
			cause = err
		}
	}
	attrs := []any{"data_dir", f.cfg.Dir}
	if f.cfg.WalDir != "" {
		attrs = append(attrs, "wal_dir", f.cfg.WalDir)
	}
	// The file etcd failed to write, and the room left where it is.
	var pe *fs.PathError
	if errors.As(cause, &pe) {
		attrs = append(attrs, "file", pe.Path)
		if n, err := diskspace.Available(filepath.Dir(pe.Path)); err == nil {
			attrs = append(attrs, "free_bytes", n)
		}
	}
	attrs = append(attrs, "err", cause)
	switch {
	case diskspace.Full(cause):
		f.lg.Error("etcd stopped: the file system of its data dir is full (no space left on device). The data dir is "+
			"kept as it is, not restored: make room on that file system and start etcdbr again; etcd replays its WAL "+
			"and serves every write it acknowledged. etcdbr raises etcd's NOSPACE alarm before the file system fills "+
			"(docs/faults.md), unless it fills faster than etcdbr looks (every second)", attrs...)
	case diskspace.ReadOnly(cause):
		f.lg.Error("etcd stopped: the file system of its data dir is read-only. The data dir is kept as it is, not "+
			"restored: remount it read-write and start etcdbr again", attrs...)
	}
	os.Exit(1)
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
