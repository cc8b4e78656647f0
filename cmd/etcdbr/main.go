// Command etcdbr keeps an etcd member alive and its data safe: it validates the data dir,
// restores it from backups, runs etcd in-process and streams snapshots to object storage.
//
// Invoked under the name "etcd" it behaves as "etcdbr run" with every argument taken as an
// etcd flag, so that it can replace etcd in a container image or a static pod.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/alecthomas/kong"

	"github.com/etcdbr/etcdbr/internal/slogzap"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // a runtime failure
	exitUsage   = 2 // the command line or configuration is wrong
)

// CLI is etcdbr's command line. Every flag also reads an ETCDBR_* environment variable.
type CLI struct {
	LogLevel  string `help:"Log level: debug, info, warn, error." default:"info" enum:"debug,info,warn,error" env:"ETCDBR_LOG_LEVEL"`
	LogFormat string `help:"Log format: text or json." default:"text" enum:"text,json" env:"ETCDBR_LOG_FORMAT"`
	Progress  string `help:"How restore, verify, copy and compact show their progress: auto (a bar when standard error is a terminal, else a log line every 5 s), bar, log, or off." default:"auto" enum:"auto,bar,log,off" env:"ETCDBR_PROGRESS"`

	Run      RunCmd      `cmd:"" help:"Run etcd in-process with validation, automatic restore and scheduled backups."`
	Snapshot SnapshotCmd `cmd:"" help:"Back up an external etcd (sidecar): full snapshots on a schedule and deltas, or one full snapshot with --once."`
	Restore  RestoreCmd  `cmd:"" help:"Rebuild a data dir offline from the store: the newest point, or any revision or time in the backup window."`
	Validate ValidateCmd `cmd:"" help:"Check a data dir: prints the verdict and the reasons; exit 0 valid, 1 invalid, 2 could not tell."`
	List     ListCmd     `cmd:"" help:"List the backups in a store."`
	Status   StatusCmd   `cmd:"" help:"Print a running etcdbr's status from its HTTP API: member, health, recovery point, store, newest backups, restore, window."`
	Verify   VerifyCmd   `cmd:"" help:"Check that every backup in a store reads back intact and that they restore."`
	Copy     CopyCmd     `cmd:"" help:"Copy backups from one store to another, verified."`
	Gc       GcCmd       `cmd:"" help:"Delete old backups by the retention policy; never what a restore needs."`
	Cluster  ClusterCmd  `cmd:"" help:"Whole-cluster operations: restore every member to one point (etcdbr cluster restore), and its status."`
	Compact  CompactCmd  `cmd:"" help:"Build a full snapshot at the end of the backup chain from the full snapshot and its deltas, so that the next restore replays nothing."`
	Version  VersionCmd  `cmd:"" help:"Print the version."`
}

// usageError marks an error in what the user asked for (exit code 2).
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

// run executes one command line and returns the process exit code.
func run(argv []string, stdout, stderr io.Writer) int {
	args := argv[1:]
	asEtcd := strings.TrimSuffix(filepath.Base(argv[0]), ".exe") == "etcd"
	if asEtcd {
		// Drop-in for the etcd binary: all arguments are etcd's.
		args = append([]string{"run", "--"}, args...)
	}
	var cli CLI
	exitCode := -1
	parser, err := newParser(&cli, stdout, stderr, func(code int) { exitCode = code })
	if err != nil {
		fmt.Fprintf(stderr, "etcdbr: %v\n", err)
		return exitFailure
	}
	kctx, err := parser.Parse(args)
	if exitCode >= 0 { // --help
		return exitCode
	}
	// A mistyped ETCDBR_* variable is ignored by kong: say so at start, before anything
	// else is logged (a usage error included, which it may explain).
	warnings := unknownEnvWarnings(os.Environ(), knownEnv(parser.Model))
	if err != nil {
		for _, w := range warnings {
			fmt.Fprintf(stderr, "etcdbr: warning: %s\n", w)
		}
		fmt.Fprintf(stderr, "etcdbr: %v\n", err)
		return exitUsage
	}

	format := cli.LogFormat
	if _, set := os.LookupEnv("ETCDBR_LOG_FORMAT"); asEtcd && !set {
		format = "json" // etcd's own default: a drop-in keeps what log pipelines expect of etcd
	}
	lw := &lockedWriter{w: stderr}
	lg, etcdLog := newLoggers(lw, cli.LogLevel, format)
	for _, w := range warnings {
		lg.Warn(w)
	}
	ctx, stop := signalContext(lg, os.Exit)
	defer stop()
	env := &Env{Stdout: stdout, Stderr: stderr, Log: lg, EtcdLog: etcdLog, AsEtcd: asEtcd, Progress: cli.Progress, stderrLines: lw}
	kctx.BindTo(ctx, (*context.Context)(nil))
	if err := kctx.Run(env); err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "etcdbr: %v\n", err)
			return exitUsage
		}
		if errors.Is(err, errHelpShown) {
			return exitOK
		}
		lg.Error("failed", "err", err)
		fmt.Fprintf(stderr, "etcdbr: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// newParser returns etcdbr's command-line parser, writing help to stdout and calling exit
// instead of exiting.
func newParser(cli *CLI, stdout, stderr io.Writer, exit func(int)) (*kong.Kong, error) {
	return kong.New(cli,
		kong.Name("etcdbr"),
		kong.Description("etcdbr keeps an etcd member alive and its data safe: validation, automatic restore, "+
			"etcd in-process, full snapshots to object storage. etcd flags go after `--` or in ETCD_* variables."),
		kong.Writers(stdout, stderr),
		kong.Exit(exit),
		kong.UsageOnError(),
		kong.NamedMapper("path", pathMapper{}),
		kong.NamedMapper("nonempty", nonEmptyMapper{}),
	)
}

// runHelp writes the help of `etcdbr run`: etcdbr's own settings.
func runHelp(w io.Writer) error {
	var cli CLI
	parser, err := newParser(&cli, w, io.Discard, func(int) {})
	if err != nil {
		return fmt.Errorf("the help of etcdbr run: %w", err)
	}
	_, _ = parser.Parse([]string{"run", "--help"}) // writes the help to w
	return nil
}

// Env is what every command gets besides its flags.
type Env struct {
	Stdout, Stderr io.Writer
	// Log is etcdbr's logger, at --log-level.
	Log *slog.Logger
	// EtcdLog is where etcd's logs go (embedded.ParseOptions.Log): the same format
	// and writer as Log, every level let through, as etcd's --log-level filters them.
	EtcdLog slog.Handler
	// AsEtcd is true when the binary was invoked under the name etcd (a drop-in for etcd).
	AsEtcd bool
	// Progress is how long work shows its progress (--progress): "auto" or "" (a bar on a
	// terminal, else log lines), "bar", "log" or "off".
	Progress string
	// stderrLines is the writer the logs share on Stderr (nil: none), which a progress
	// display on a terminal shares too.
	stderrLines *lockedWriter
}

// newLoggers returns etcdbr's logger, at level, and the handler for etcd's logs, at
// every level: both write lines of the same format (text or json) to w, one write per
// line, never two at once.
func newLoggers(w io.Writer, level, format string) (*slog.Logger, slog.Handler) {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(level)) // validated by kong's enum
	if _, ok := w.(*lockedWriter); !ok {
		w = &lockedWriter{w: w}
	}
	newHandler := func(lvl slog.Level) slog.Handler {
		opts := &slog.HandlerOptions{Level: lvl, ReplaceAttr: slogzap.ReplaceLevelNames}
		if format == "json" {
			return slog.NewJSONHandler(w, opts)
		}
		return slog.NewTextHandler(w, opts)
	}
	return slog.New(newHandler(lvl)), newHandler(slog.LevelDebug)
}

// lockedWriter serializes writes to w: two handlers that share a writer each lock
// only themselves.
// While a progress display is drawn on the terminal (clearLine), each write first clears
// the display's line: a log line then starts at the line's beginning, and the display is
// drawn again below it.
type lockedWriter struct {
	mu        sync.Mutex
	w         io.Writer
	clearLine bool
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.clearLine {
		if _, err := io.WriteString(l.w, "\r\x1b[K"); err != nil {
			return 0, err
		}
	}
	return l.w.Write(p)
}

// raw is a writer to the same place that never clears the line first: the progress
// display's own.
func (l *lockedWriter) raw() io.Writer { return rawWriter{l} }

type rawWriter struct{ l *lockedWriter }

func (r rawWriter) Write(p []byte) (int, error) {
	r.l.mu.Lock()
	defer r.l.mu.Unlock()
	return r.l.w.Write(p)
}

// setClearLine turns clearing the line before each write on or off.
func (l *lockedWriter) setClearLine(on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.clearLine = on
}

// signalContext is cancelled by the first SIGINT or SIGTERM; a second one calls exit at once.
func signalContext(lg *slog.Logger, exit func(int)) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-ch:
			lg.Info("signal received: stopping cleanly (send it again to exit at once)", "signal", sig.String())
			cancel()
		case <-done:
			return
		}
		select {
		case sig := <-ch:
			lg.Warn("second signal received: exiting at once", "signal", sig.String())
			exit(exitFailure)
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel()
	}
}
