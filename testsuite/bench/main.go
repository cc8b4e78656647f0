// Command bench measures etcdbr beside plain etcd and etcd's own tools, in the same run on
// the same machine, and prints a table (docs/bench.md):
//
//	go run ./testsuite/bench                # every figure, default sizes
//	go run ./testsuite/bench -short -json   # tiny sizes, one JSON line per figure
//
// It builds etcdbr, etcdutl, etcdctl and plain etcd (go.mod's versions), then:
//
//   - restore: an in-process etcd gets -keys keys of -value-size bytes, a full snapshot goes
//     into a file:// store, then -events and then -long-events events of churn (overwrites,
//     deletes and re-creates, 4-put transactions, leased keys) go into deltas. `etcdbr
//     restore` to both points, beside `etcdutl snapshot restore` of the full snapshot alone.
//   - progress: `etcdbr restore` of the last point with --progress off, log and bar, rotating:
//     what showing progress costs; with -artifacts, the log lines of a piped restore and the
//     screens of one in a tmux pane are kept there.
//   - compact: `etcdbr compact` of that chain into one full snapshot, then `etcdbr restore` of
//     the last point from it beside `etcdbr restore` of the chain, alternating; plain etcd's
//     HashKV of the two restores must be equal.
//   - start: start to ready of etcdbr run on the data dir restored to the last point, clean
//     (--validation quick, after a clean stop of etcdbr run) and after a SIGKILL (--validation
//     full), each checked from etcdbr's log to have run at that depth, beside plain etcd on the
//     same dir.
//   - snapshot: a full snapshot of that member into a file:// store, by `etcdbr snapshot --once`
//     from plain etcd (the sidecar, through the Maintenance API) and by etcdbr run itself
//     (POST /v1/snapshots/full, from the backend), each beside `etcdctl snapshot save` into a
//     file from the same member.
//   - put: put throughput with -clients clients, etcdbr run with deltas every second beside
//     the same etcdbr run with backups off.
//   - rejoin: three etcdbr run members with a db of -rejoin-db-mib; a follower wiped and started
//     again, until it is a promoted voter (the learner path), beside another follower replaced
//     by hand with plain etcd, until etcd lets it be promoted (the time etcd needs to send it
//     the db).
//   - defrag: etcdbr run with -defrag-db-mib of values written and nine in ten deleted, etcd's
//     history compacted; etcdbr defragments the member by its threshold while writers put,
//     and their put latency during the defrag is beside theirs before it (no defrag).
//   - cluster-restore: a store of its own (a full snapshot of a -cluster-restore-db-mib db, then
//     -long-events events) restored by three etcdbr run members started on no data after
//     `etcdbr cluster restore`, until every member serves and until the intent is done (no
//     baseline: without etcdbr it is a person's runbook).
//
// Every child's wall time, CPU time, peak RSS (VmHWM) and peak RssAnon (sampled from
// /proc/PID/status) are measured from outside; start and snapshot alternate the two sides for
// -rounds rounds and report the median.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// scenarios are the parts of the benchmark, in the order they run.
var scenarios = []string{"restore", "progress", "compact", "start", "snapshot", "put", "rejoin", "defrag", "cluster-restore"}

// config sizes a run.
type config struct {
	Keys, ValueSize, Writers int
	Events, LongEvents       int
	DeltaRevisions           int64
	Seed                     uint64
	Clients, Conns, Rounds   int
	RejoinMiB                int
	DefragMiB                int
	PutDuration              time.Duration
	Scenarios                []string
	Dir                      string
	Artifacts                string // where the progress scenario keeps what a person sees ("": not kept)
	Bins                     binaries
	Log                      io.Writer // progress

	// ClusterRestoreMiB sizes the cluster-restore scenario's db; DBBytes, when not 0, makes
	// a dataset write keys until its db is that large instead of Keys keys.
	ClusterRestoreMiB int
	DBBytes           int64
}

// progress logs a line of progress.
func (c config) progress(format string, args ...any) {
	fmt.Fprintf(c.Log, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// run parses the flags, runs the benchmark and prints its table; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	only := fs.String("scenario", strings.Join(scenarios, ","), "what to measure, comma-separated: "+strings.Join(scenarios, ", ")+" (compact, progress, start and snapshot need restore's data set: restore runs with them)")
	short := fs.Bool("short", false, "tiny sizes (a smoke test of the harness; the figures mean nothing)")
	asJSON := fs.Bool("json", false, "print one JSON object per figure and line instead of the table")
	fs.IntVar(&cfg.Keys, "keys", 100_000, "keys in the full snapshot")
	fs.IntVar(&cfg.ValueSize, "value-size", 1024, "bytes per value (initial keys, churn and the put load)")
	fs.IntVar(&cfg.Events, "events", 200_000, "events in the deltas of the first restore")
	fs.IntVar(&cfg.LongEvents, "long-events", 1_000_000, "events in the deltas of the second restore (0: no second restore)")
	fs.Int64Var(&cfg.DeltaRevisions, "delta-revisions", 10_000, "revisions per delta")
	fs.IntVar(&cfg.Writers, "writers", 8, "concurrent writers making the churn")
	fs.IntVar(&cfg.Clients, "clients", 64, "concurrent clients of the put load")
	fs.IntVar(&cfg.Conns, "conns", 8, "connections the put clients share")
	fs.DurationVar(&cfg.PutDuration, "put-duration", 15*time.Second, "how long each put round is measured")
	fs.IntVar(&cfg.Rounds, "rounds", 3, "rounds of the start, snapshot and put figures (alternating etcdbr and the baseline; start and snapshot report the median)")
	fs.IntVar(&cfg.RejoinMiB, "rejoin-db-mib", 1024, "size of the db of the rejoin scenario's cluster, in MiB")
	fs.IntVar(&cfg.DefragMiB, "defrag-db-mib", 1024, "MiB written into the defrag scenario's member before nine in ten are deleted")
	fs.IntVar(&cfg.ClusterRestoreMiB, "cluster-restore-db-mib", 1024, "size of the db of the cluster-restore scenario's full snapshot, in MiB (-long-events events after it)")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of the workload")
	fs.StringVar(&cfg.Artifacts, "artifacts", "", "a directory to keep, from the progress scenario, the progress lines of a piped restore and the screens of one on a terminal (tmux)")
	fs.StringVar(&cfg.Dir, "dir", "", "work directory, empty or new (default: a new temporary directory, removed at the end)")
	fs.StringVar(&cfg.Bins.Etcdbr, "etcdbr", "", "etcdbr binary (default: built from this checkout)")
	fs.StringVar(&cfg.Bins.Etcdutl, "etcdutl", "", "etcdutl binary (default: built, go.mod's version)")
	fs.StringVar(&cfg.Bins.Etcdctl, "etcdctl", "", "etcdctl binary (default: built, go.mod's version)")
	fs.StringVar(&cfg.Bins.Etcd, "etcd", "", "plain etcd binary (default: built from go.etcd.io/etcd/server/v3, go.mod's version)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *short {
		cfg.Keys, cfg.ValueSize, cfg.Events, cfg.LongEvents, cfg.DeltaRevisions = 300, 200, 600, 1500, 150
		cfg.Writers, cfg.Clients, cfg.Conns, cfg.PutDuration, cfg.Rounds = 3, 4, 2, time.Second, 1
		cfg.RejoinMiB, cfg.DefragMiB, cfg.ClusterRestoreMiB = 2, 8, 2
	}
	for _, s := range strings.Split(*only, ",") {
		if s = strings.TrimSpace(s); !slices.Contains(scenarios, s) {
			fmt.Fprintf(stderr, "bench: unknown scenario %q (there are: %s)\n", s, strings.Join(scenarios, ", "))
			return 2
		}
		cfg.Scenarios = append(cfg.Scenarios, s)
	}
	if cfg.Keys < 1 || cfg.ValueSize < 1 || cfg.DeltaRevisions < 1 || cfg.Writers < 1 || cfg.Clients < 1 || cfg.Conns < 1 ||
		cfg.Rounds < 1 || cfg.PutDuration <= 0 || cfg.Events < 0 || cfg.LongEvents < 0 || cfg.RejoinMiB < 1 || cfg.DefragMiB < 1 || cfg.ClusterRestoreMiB < 1 {
		fmt.Fprintln(stderr, "bench: -keys, -value-size, -delta-revisions, -writers, -clients, -conns, -rounds, -put-duration, -rejoin-db-mib, -defrag-db-mib and -cluster-restore-db-mib must be positive, -events and -long-events not negative")
		return 2
	}
	cfg.Log = stderr
	figs, err := bench(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	if *asJSON {
		err = printJSON(stdout, figs)
	} else {
		err = machine(stdout)
		printTable(stdout, figs)
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	return 0
}

// bench runs the scenarios of cfg and returns their figures.
func bench(ctx context.Context, cfg config) (figs []figure, err error) {
	dir := cfg.Dir
	if entries, err := os.ReadDir(dir); dir != "" && err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("the work directory %q is not empty", dir)
	}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "etcdbr-bench-*"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
	}
	cfg.progress("building etcdbr, etcdutl, etcdctl and etcd into %s", filepath.Join(dir, "bin"))
	if err := cfg.Bins.build(ctx, filepath.Join(dir, "bin")); err != nil {
		return nil, err
	}
	want := func(s string) bool { return slices.Contains(cfg.Scenarios, s) }
	if want("restore") || want("compact") || want("progress") || want("start") || want("snapshot") {
		ds, err := makeDataset(ctx, cfg, dir)
		if err != nil {
			return nil, err
		}
		restored := filepath.Join(dir, "restored")
		f, err := benchRestore(ctx, cfg, &ds, dir, restored)
		if err != nil {
			return nil, err
		}
		if want("restore") {
			figs = append(figs, f...)
		}
		// Before compact: its full snapshot at the last point would leave nothing to replay.
		if want("progress") {
			p, err := benchProgress(ctx, cfg, ds, dir)
			if err != nil {
				return nil, fmt.Errorf("progress: %w", err)
			}
			figs = append(figs, p...)
		}
		if want("compact") {
			c, err := benchCompact(ctx, cfg, ds, dir)
			if err != nil {
				return nil, fmt.Errorf("compact: %w", err)
			}
			figs = append(figs, c...)
		}
		if want("start") {
			if f, err = benchStart(ctx, cfg, restored, ds.StoreURL, dir); err != nil {
				return nil, fmt.Errorf("start to ready: %w", err)
			}
			figs = append(figs, f...)
		}
		if want("snapshot") {
			if f, err = benchSnapshot(ctx, cfg, restored, dir); err != nil {
				return nil, fmt.Errorf("snapshot: %w", err)
			}
			figs = append(figs, f...)
		}
	}
	if want("put") {
		f, err := benchPut(ctx, cfg, dir)
		if err != nil {
			return nil, err
		}
		figs = append(figs, f...)
	}
	if want("rejoin") {
		f, err := benchRejoin(ctx, cfg, dir)
		if err != nil {
			return nil, fmt.Errorf("rejoin: %w", err)
		}
		figs = append(figs, f...)
	}
	if want("defrag") {
		f, err := benchDefrag(ctx, cfg, dir)
		if err != nil {
			return nil, fmt.Errorf("defrag: %w", err)
		}
		figs = append(figs, f...)
	}
	if want("cluster-restore") {
		f, err := benchClusterRestore(ctx, cfg, dir)
		if err != nil {
			return nil, fmt.Errorf("cluster restore: %w", err)
		}
		figs = append(figs, f...)
	}
	return figs, nil
}

// machine says what the numbers were measured on.
func machine(w io.Writer) error {
	mem := "unknown"
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		if line, _, ok := strings.Cut(string(data), "\n"); ok {
			mem = strings.Join(strings.Fields(line)[1:], " ")
		}
	}
	host, _ := os.Hostname()
	_, err := fmt.Fprintf(w, "machine: %s, %d CPUs, memory %s, %s\n\n", host, runtimeCPUs(), mem, time.Now().UTC().Format(time.RFC3339))
	return err
}
