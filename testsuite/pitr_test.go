package testsuite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/embedded/rebuild"
	"github.com/etcdbr/etcdbr/internal/deltatest"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/internal/etcdtest"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
	"github.com/etcdbr/etcdbr/supervisor"
)

// pitrTarget is a point to restore to and the source's data there.
type pitrTarget struct {
	name   string
	target catalog.Target
	want   etcdtest.Dump
}

// pitrSource is a store made from a real member running a seeded churn: a full snapshot,
// deltas after it (the first starting before it), a compaction, a second full snapshot
// taken after the compaction, more deltas; and the member's data at chosen points.
type pitrSource struct {
	storeURL string
	storeDir string
	f1, f2   catalog.Snapshot
	deltas   []catalog.Snapshot
	compact  int64
	targets  []pitrTarget
	ttls     deltatest.LeaseTTLs
}

// buildPITRSource runs the churn of seed on a fresh in-process member and records it.
func buildPITRSource(t *testing.T, seed uint64, ops int) *pitrSource {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg := embeddedtest.NewConfig(t)
	e, err := embedded.Start(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cli := e.Client()
	src := &pitrSource{storeDir: filepath.Join(t.TempDir(), "store")}
	src.storeURL = "file://" + src.storeDir
	store := openStore(t, src.storeURL)
	defer store.Close()

	rng := rand.New(rand.NewPCG(seed, 99))
	var rec *deltatest.Recorder
	defer func() {
		if rec != nil {
			rec.Stop()
		}
	}()
	var cut int64
	phase := 0                                             // the targets taken in the middle of the churn
	nextCut := func() int64 { return 20 + rng.Int64N(60) } // revisions per delta
	cutEvery := nextCut()
	took := func(name string, target catalog.Target) error {
		d, err := etcdtest.Take(ctx, cli, 0)
		if err != nil {
			return err
		}
		src.targets = append(src.targets, pitrTarget{name: name, target: target, want: d})
		return nil
	}
	at := func(op int, frac float64) bool { return op >= int(frac*float64(ops)) }
	churn := deltatest.Churn{Seed: seed, Ops: ops, Keys: 150, ValueSize: 80, Expiring: 2}
	res, err := churn.Run(ctx, cli, func(op int, rev int64) error {
		var err error
		switch {
		case rec == nil && at(op, 0.1):
			if src.f1, err = backup.FullFromBackend(ctx, e.Server().Backend(), store); err != nil {
				return err
			}
			rec = deltatest.Start(ctx, cli, store, src.f1.Revision-2, deltatest.Options{})
			cut = src.f1.Revision - 3
			return took("the first full snapshot's revision", catalog.Target{Revision: src.f1.Revision})
		case rec == nil:
			return nil
		}
		if rev-cut >= cutEvery {
			d, err := rec.Cut(ctx, rev)
			if err != nil {
				return err
			}
			src.deltas = append(src.deltas, d)
			cut, cutEvery = rev, nextCut()
		}
		switch {
		case rev == src.f1.Revision+1:
			return took("just after the full snapshot", catalog.Target{Revision: rev})
		case phase == 0 && at(op, 0.3) && rev != cut:
			phase = 1
			return took("inside a delta", catalog.Target{Revision: rev})
		case phase == 1 && at(op, 0.4):
			// A time between two revisions: after this one was observed, before the next.
			if err := rec.WaitFor(ctx, rev); err != nil {
				return err
			}
			phase = 2
			target := catalog.Target{Time: time.Now()}
			if err := took("a time", target); err != nil {
				return err
			}
			time.Sleep(3 * time.Millisecond)
		case src.compact == 0 && at(op, 0.55):
			if err := took("just before the compaction", catalog.Target{Revision: rev}); err != nil {
				return err
			}
			if err := rec.WaitFor(ctx, rev); err != nil {
				return err
			}
			if _, err := cli.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
				return err
			}
			src.compact = rev
		case src.compact > 0 && src.f2.Key == "" && at(op, 0.7):
			if src.f2, err = backup.FullFromBackend(ctx, e.Server().Backend(), store); err != nil {
				return err
			}
		case src.f2.Key != "" && phase == 2 && at(op, 0.85):
			phase = 3
			return took("after the compaction and the second full snapshot", catalog.Target{Revision: rev})
		}
		return nil
	})
	if err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	if res.Revision > cut {
		d, err := rec.Cut(ctx, res.Revision)
		if err != nil {
			t.Fatal(err)
		}
		src.deltas = append(src.deltas, d)
	}
	if err := took("the latest point", catalog.Target{}); err != nil {
		t.Fatal(err)
	}
	src.ttls = deltatest.ExpectedTTLs(res.TTLs, rec.TTLs(), rebuild.MinLeaseTTL(cfg))
	// The end of a delta, read back from the source's history (after the compaction, which
	// removed the history before it).
	var end catalog.Snapshot
	for _, d := range src.deltas {
		if d.Revision > src.compact && d.Revision < res.Revision {
			end = d
			break
		}
	}
	want, err := etcdtest.Take(ctx, cli, end.Revision)
	if err != nil {
		t.Fatal(err)
	}
	src.targets = append(src.targets, pitrTarget{name: "the end of a delta", target: catalog.Target{Revision: end.Revision}, want: want})
	if src.f2.Key == "" || src.compact == 0 || len(src.targets) != 8 {
		t.Fatalf("seed %d: the churn did not reach every point: f2 %q, compaction %d, %d targets", seed, src.f2.Key, src.compact, len(src.targets))
	}
	return src
}

// TestPITRRandomized restores the stores of several seeded churns (every kind of write,
// leases expiring, a compaction in the middle) to points all over their backup window, and
// compares every key and field, and every lease a key uses, with the source's at that point.
func TestPITRRandomized(t *testing.T) {
	t.Parallel()
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			t.Parallel()
			src := buildPITRSource(t, seed, 900)
			store := openStore(t, src.storeURL)
			defer store.Close()
			for _, tc := range src.targets {
				t.Run(tc.name, func(t *testing.T) {
					cfg := embeddedtest.NewConfig(t)
					res, err := supervisor.Restore(context.Background(), store, cfg, tc.target, rebuild.RestoreOptions{}, nil)
					if err != nil {
						t.Fatal(err)
					}
					if res.Revision != tc.want.Revision {
						t.Fatalf("restored revision %d, want %d", res.Revision, tc.want.Revision)
					}
					got := pitrDump(t, cfg)
					if diff := deltatest.Compare(tc.want, got, src.ttls, 20); len(diff) > 0 {
						t.Fatalf("restored to %s (full %s, %d deltas): data differs from the source's at revision %d:\n%s",
							tc.target, res.Snapshot.Key, len(res.Deltas), tc.want.Revision, strings.Join(diff, "\n"))
					}
				})
			}
		})
	}
}

// pitrDump starts etcd in-process on cfg and dumps its data.
func pitrDump(t *testing.T, cfg *embed.Config) etcdtest.Dump {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := embedded.Start(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	d, err := etcdtest.Take(ctx, e.Client(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestPITRCommands drives restores to a point through the binary: `etcdbr list` shows the
// deltas and the window, `etcdbr restore` goes to a revision, a time and the latest point
// (with a revision bump), `etcdbr run` restores a missing data dir with the deltas, and
// damaged stores fail with messages that name the objects.
func TestPITRCommands(t *testing.T) {
	t.Parallel()
	src := buildPITRSource(t, 4, 500)
	byName := map[string]pitrTarget{}
	for _, tg := range src.targets {
		byName[tg.name] = tg
	}

	code, out := runToExit(t, []string{"list", "--store", src.storeURL, "--objects"})
	if code != 0 {
		t.Fatalf("etcdbr list: exit %d\n%s", code, out)
	}
	latest := byName["the latest point"].want.Revision
	for _, s := range []string{src.f1.Key, src.f2.Key, src.deltas[0].Key, src.deltas[len(src.deltas)-1].Key,
		fmt.Sprintf("restorable: revision %d (", src.f1.Revision), fmt.Sprintf("to revision %d (", latest)} {
		if !strings.Contains(out, s) {
			t.Errorf("etcdbr list does not show %q:\n%s", s, out)
		}
	}
	if strings.Contains(out, "gap:") || strings.Contains(out, "overlap:") {
		t.Errorf("etcdbr list shows a gap or an overlap in an unbroken store:\n%s", out)
	}

	restore := func(t *testing.T, store string, flags ...string) (member, int, string) {
		m := newMember(t, t.TempDir())
		args := append(append([]string{"restore", "--data-dir", m.DataDir, "--store", store}, flags...), "--")
		code, out := runToExit(t, append(args, m.etcdFlags()...))
		return m, code, out
	}
	serve := func(t *testing.T, m member, store string) *clientv3.Client {
		p := start(t, m.runArgs(store, "--full-snapshot-schedule", "@daily"))
		t.Cleanup(p.stop)
		return client(t, m.ClientURL)
	}
	// A restore without --exact starts a new history past the store's newest revision and
	// what the lost member may have served after it.
	newHistory := latest + catalog.DefaultUnbackedRevisions + catalog.BumpMargin
	check := func(t *testing.T, cli *clientv3.Client, want etcdtest.Dump, dataRev int64) {
		got, err := etcdtest.Take(context.Background(), cli, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got.Revision != dataRev {
			t.Fatalf("the restored member is at revision %d, want %d", got.Revision, dataRev)
		}
		got.Revision = want.Revision
		if diff := deltatest.Compare(want, got, src.ttls, 20); len(diff) > 0 {
			t.Fatalf("restored data differs from the source's at revision %d:\n%s", want.Revision, strings.Join(diff, "\n"))
		}
	}

	t.Run("to a revision inside a delta", func(t *testing.T) {
		t.Parallel()
		tg := byName["inside a delta"]
		m, code, out := restore(t, src.storeURL, "--to-revision", fmt.Sprint(tg.want.Revision))
		if code != 0 || !strings.Contains(out, fmt.Sprintf("to revision %d", tg.want.Revision)) {
			t.Fatalf("etcdbr restore: exit %d\n%s", code, out)
		}
		if !strings.Contains(out, fmt.Sprintf("starts a new history at revision %d", newHistory)) {
			t.Errorf("restoring a past point does not say it starts a new history at revision %d:\n%s", newHistory, out)
		}
		check(t, serve(t, m, "file://"+filepath.Join(t.TempDir(), "new-store")), tg.want, newHistory)
	})

	t.Run("to a time", func(t *testing.T) {
		t.Parallel()
		tg := byName["a time"]
		m, code, out := restore(t, src.storeURL, "--to-time", tg.target.Time.Format(time.RFC3339Nano))
		if code != 0 || !strings.Contains(out, fmt.Sprintf("to revision %d", tg.want.Revision)) {
			t.Fatalf("etcdbr restore --to-time: exit %d, want revision %d\n%s", code, tg.want.Revision, out)
		}
		check(t, serve(t, m, "file://"+filepath.Join(t.TempDir(), "new-store")), tg.want, newHistory)
	})

	t.Run("latest with a larger revision bump", func(t *testing.T) {
		t.Parallel()
		tg := byName["the latest point"]
		const bump = 3 * catalog.DefaultUnbackedRevisions
		m, code, out := restore(t, src.storeURL, "--bump-revision", fmt.Sprint(bump), "--mark-compacted")
		if code != 0 || !strings.Contains(out, fmt.Sprintf("new history at revision %d (marked compacted)", tg.want.Revision+bump)) {
			t.Fatalf("etcdbr restore --bump-revision: exit %d\n%s", code, out)
		}
		cli := serve(t, m, "file://"+filepath.Join(t.TempDir(), "new-store"))
		check(t, cli, tg.want, tg.want.Revision+bump)
		if _, err := cli.Get(context.Background(), "x", clientv3.WithRev(tg.want.Revision)); !errors.Is(err, rpctypes.ErrCompacted) {
			t.Fatalf("a read at the restored revision after the bump: %v, want ErrCompacted", err)
		}
	})

	t.Run("latest when nothing was served after the store's newest", func(t *testing.T) {
		t.Parallel()
		tg := byName["the latest point"]
		m, code, out := restore(t, src.storeURL, "--unbacked-revisions", "0")
		if code != 0 || strings.Contains(out, "new history") {
			t.Fatalf("etcdbr restore --unbacked-revisions 0: exit %d, want the same history\n%s", code, out)
		}
		check(t, serve(t, m, "file://"+filepath.Join(t.TempDir(), "new-store")), tg.want, tg.want.Revision)
	})

	t.Run("exact copy of a past point", func(t *testing.T) {
		t.Parallel()
		tg := byName["inside a delta"]
		m, code, out := restore(t, src.storeURL, "--exact", "--to-revision", fmt.Sprint(tg.want.Revision))
		if code != 0 || strings.Contains(out, "new history") || !strings.Contains(out, "refuses to back it up into this store") {
			t.Fatalf("etcdbr restore --exact: exit %d\n%s", code, out)
		}
		check(t, serve(t, m, "file://"+filepath.Join(t.TempDir(), "new-store")), tg.want, tg.want.Revision)
	})

	t.Run("run restores a missing data dir with the deltas", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		m := newMember(t, dir)
		store := "file://" + filepath.Join(dir, "store")
		copyTree(t, src.storeDir, filepath.Join(dir, "store"))
		p := start(t, m.runArgs(store, "--full-snapshot-schedule", "@daily"))
		t.Cleanup(p.stop)
		check(t, client(t, m.ClientURL), byName["the latest point"].want, newHistory)
	})

	t.Run("damaged stores", func(t *testing.T) {
		t.Parallel()
		mid := src.deltas[len(src.deltas)-2] // after the second full snapshot
		if mid.From <= src.f2.Revision {
			t.Fatalf("the fixture has too few deltas after the second full snapshot: %v", mid)
		}
		for _, tc := range []struct {
			name   string
			damage func(t *testing.T, dir string)
			says   []string
		}{
			{"a delta with a flipped byte", func(t *testing.T, dir string) {
				path := filepath.Join(dir, filepath.FromSlash(mid.Key))
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				b[len(b)/2] ^= 1
				if err := os.WriteFile(path, b, 0o600); err != nil {
					t.Fatal(err)
				}
			}, []string{mid.Key, "failed verification", "corrupt backup object", fmt.Sprintf("restore that with --to-revision %d", mid.From-1)}},
			{"a missing delta", func(t *testing.T, dir string) {
				if err := os.Remove(filepath.Join(dir, filepath.FromSlash(mid.Key))); err != nil {
					t.Fatal(err)
				}
			}, []string{"gap: no delta holds revision " + fmt.Sprint(mid.From), "cannot be reached"}},
			{"two deltas that overlap", func(t *testing.T, dir string) {
				b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(mid.Key)))
				if err != nil {
					t.Fatal(err)
				}
				// The same revisions once more, under a range one revision longer.
				other := catalog.DeltaName(mid.From, mid.Revision+1, mid.Time, false)
				if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(other)), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}, []string{"overlap at revision " + fmt.Sprint(mid.From), mid.Key, "cannot both belong to one history"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				dir := filepath.Join(t.TempDir(), "store")
				copyTree(t, src.storeDir, dir)
				tc.damage(t, dir)
				m, code, out := restore(t, "file://"+dir)
				if code != 1 {
					t.Fatalf("exit code %d, want 1\n%s", code, out)
				}
				for _, s := range tc.says {
					if !strings.Contains(out, s) {
						t.Errorf("the error does not say %q:\n%s", s, out)
					}
				}
				if entries, _ := os.ReadDir(m.DataDir); len(entries) > 0 {
					t.Errorf("a failed restore left files in the data dir")
				}
				code, out = runToExit(t, []string{"list", "--store", "file://" + dir, "--objects"})
				if code != 0 {
					t.Fatalf("etcdbr list: exit %d\n%s", code, out)
				}
				if !strings.Contains(out, "gap:") && !strings.Contains(out, "overlap:") {
					t.Errorf("etcdbr list does not show the damage:\n%s", out)
				}
				if tc.name == "a delta with a flipped byte" && !strings.Contains(out, "damaged: "+mid.Key) {
					t.Errorf("etcdbr list does not name the object the restore found damaged:\n%s", out)
				}
				if tc.name == "a delta with a flipped byte" {
					// The next restore plans without the recorded object from the start, and
					// says the same.
					_, code, out := restore(t, "file://"+dir)
					want := []string{mid.Key, "recorded as damaged by restore", fmt.Sprintf("restore that with --to-revision %d", mid.From-1)}
					for _, s := range want {
						if code != 1 || !strings.Contains(out, s) {
							t.Errorf("a restore after the damage was recorded: exit %d, want 1 and %q:\n%s", code, s, out)
						}
					}
				}
			})
		}
	})

	t.Run("usage errors", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			flags []string
			says  string
		}{
			{[]string{"--to-revision", "5", "--to-time", "2026-11-25T10:00:00Z"}, "not both"},
			{[]string{"--to-time", "yesterday"}, "RFC 3339"},
			{[]string{"--exact", "--bump-revision", "10"}, "without --bump-revision"},
			{[]string{"--exact", "--mark-compacted"}, "without --bump-revision"},
			{[]string{"--unbacked-revisions=-1"}, "give 0 or more"},
			{[]string{"--to-revision=-3"}, "revisions start at 1"},
		} {
			_, code, out := restore(t, src.storeURL, tc.flags...)
			if code != 2 || !strings.Contains(out, tc.says) {
				t.Errorf("%v: exit %d, want 2 and %q\n%s", tc.flags, code, tc.says, out)
			}
		}
		_, code, out := restore(t, src.storeURL, "--to-revision", fmt.Sprint(src.f1.Revision-1))
		if code != 1 || !strings.Contains(out, "before the oldest full snapshot") {
			t.Errorf("a revision before the oldest full snapshot: exit %d\n%s", code, out)
		}
	})
}

// TestPITRFromRun restores what `etcdbr run` itself backs up (full snapshot and deltas from
// its delta taker) to the latest point and to a revision in the middle.
func TestPITRFromRun(t *testing.T) {
	t.Parallel()
	_, store, p, cli := startBackedUp(t)
	ctx := context.Background()

	var mid etcdtest.Dump
	res, err := deltatest.Churn{Seed: 5, Ops: 500, Keys: 100, Expiring: 1}.Run(ctx, cli, func(op int, rev int64) error {
		if op >= 250 && mid.Revision == 0 {
			var err error
			mid, err = etcdtest.Take(ctx, cli, 0)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	final, err := etcdtest.Take(ctx, cli, 0)
	if err != nil {
		t.Fatal(err)
	}
	cli.Close()
	p.stop() // uploads the final delta
	if len(deltas(t, store)) == 0 {
		t.Fatal("etcdbr run wrote no delta")
	}
	ttls := deltatest.ExpectedTTLs(res.TTLs, pitrRecordedTTLs(t, store), rebuild.MinLeaseTTL(embed.NewConfig()))
	newest := newestRevision(t, store)

	for _, tc := range []struct {
		name  string
		flags []string
		want  etcdtest.Dump
	}{
		{"latest", nil, final},
		{"a revision in the middle", []string{"--to-revision", fmt.Sprint(mid.Revision)}, mid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMember(t, t.TempDir())
			args := append(append([]string{"restore", "--data-dir", m.DataDir, "--store", store, "--keep-store-cluster"}, tc.flags...), "--")
			code, out := runToExit(t, append(args, m.etcdFlags()...))
			if code != 0 || !strings.Contains(out, fmt.Sprintf("to revision %d", tc.want.Revision)) {
				t.Fatalf("etcdbr restore: exit %d, want revision %d\n%s", code, tc.want.Revision, out)
			}
			p := start(t, m.runArgs("file://"+filepath.Join(t.TempDir(), "new-store"), "--full-snapshot-schedule", "@daily"))
			defer p.stop()
			got, err := etcdtest.Take(ctx, client(t, m.ClientURL), 0)
			if err != nil {
				t.Fatal(err)
			}
			// An offline restore starts a new history past the store's newest revision.
			if diff := deltatest.Compare(newHistory(tc.want, newest), got, ttls, 20); len(diff) > 0 {
				t.Fatalf("restored data differs from the source's at revision %d:\n%s", tc.want.Revision, strings.Join(diff, "\n"))
			}
		})
	}
}

// pitrRecordedTTLs reads the lease records of every delta in a store.
func pitrRecordedTTLs(t *testing.T, url string) map[int64]int64 {
	t.Helper()
	ctx := context.Background()
	s := openStore(t, url)
	defer s.Close()
	ttls := map[int64]int64{}
	for _, d := range deltas(t, url) {
		r, err := s.Open(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		dec, err := snapstore.NewDeltaDecoder(r)
		for err == nil {
			var l *snapstore.Lease
			if l, _, err = dec.Next(); l != nil {
				if old, ok := ttls[l.ID]; !ok || old == 0 {
					ttls[l.ID] = l.TTL
				}
			}
		}
		r.Close()
		if !errors.Is(err, io.EOF) {
			t.Fatalf("read %s: %v", d.Key, err)
		}
	}
	return ttls
}
