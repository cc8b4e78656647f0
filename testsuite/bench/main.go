// Command bench measures etcdbr against etcd's own tools on this machine.
//
//	go run ./testsuite/bench -scenario restore -keys 100000 -events 200000
//
// Scenario restore: an in-process etcd gets -keys keys, a full snapshot is taken into a file
// store, then -events events of churn (overwrites, deletes and re-creates, multi-op
// transactions, leased keys) are recorded into deltas. Then, as child processes, the
// baseline `etcdutl snapshot restore` of the full snapshot alone, and `etcdbr restore` of the
// full snapshot and every delta, each with its wall time, peak RSS and peak anonymous memory
// (RssAnon, sampled from /proc/PID/status; bbolt's mmap of the db is file-backed and does
// not count). The restored data dir is checked to end at the source's last revision.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run parses the flags, runs the scenario and prints its report; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scenario := fs.String("scenario", "restore", "what to measure: restore")
	var cfg restoreConfig
	fs.IntVar(&cfg.Keys, "keys", 100_000, "keys in the full snapshot")
	fs.IntVar(&cfg.Events, "events", 200_000, "events in the deltas after the full snapshot")
	fs.IntVar(&cfg.ValueSize, "value-size", 200, "bytes per value")
	fs.Int64Var(&cfg.DeltaRevisions, "delta-revisions", 10_000, "revisions per delta")
	fs.IntVar(&cfg.Writers, "writers", 8, "concurrent writers making the churn")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of the churn")
	fs.StringVar(&cfg.Dir, "dir", "", "work directory (default: a new temporary directory, removed at the end)")
	fs.StringVar(&cfg.Etcdbr, "etcdbr", "", "etcdbr binary (default: built from this checkout)")
	fs.StringVar(&cfg.Etcdutl, "etcdutl", "", "etcdutl binary (default: built from the etcd version in go.mod)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *scenario != "restore" {
		fmt.Fprintf(stderr, "bench: unknown scenario %q (there is: restore)\n", *scenario)
		return 2
	}
	if cfg.Keys < 1 || cfg.Events < 0 || cfg.ValueSize < 1 || cfg.DeltaRevisions < 1 || cfg.Writers < 1 {
		fmt.Fprintln(stderr, "bench: -keys, -value-size, -delta-revisions and -writers must be positive, -events not negative")
		return 2
	}
	cfg.Log = stderr
	res, err := benchRestore(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	res.print(stdout)
	return 0
}
