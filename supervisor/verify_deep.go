package supervisor

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/embedded/rebuild"
	"github.com/etcdbr/etcdbr/internal/progress"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// verifyStartTimeout bounds the start of etcd on the restored data dir.
const verifyStartTimeout = 2 * time.Minute

// verifyMaxKeyProblems is how many mismatching keys a deep verification lists.
const verifyMaxKeyProblems = 10

// DeepVerifyReport is what VerifyDeep found.
type DeepVerifyReport struct {
	// Restore is what the restore read and where it ended.
	Restore RestoreResult
	// Revision is the restored member's revision as etcd reports it once started on the
	// restored data dir; Keys is the number of keys it holds.
	Revision, Keys int64
	// KeysChecked counts the keys the restored deltas wrote or deleted, each compared with
	// the last event the deltas hold for it.
	KeysChecked int
	// Problems lists what is wrong.
	Problems []catalog.Problem
	// Duration is how long it took.
	Duration time.Duration
}

// VerifyDeep restores the latest point of the store into a new temporary directory under tempDir
// with the restore etcdbr itself uses (Restore: every object verified while it
// streams, the deltas replayed, etcdutl's restore), starts etcd on the result on loopback
// ports, and checks that:
//
//   - the restore used the chain plan names (want: snapstore.Verify's latest plan), leaving
//     nothing out, and ended at its revision;
//   - etcd starts on the restored data dir and reports that revision;
//   - every key the restored deltas wrote or deleted is, in the running member, exactly
//     what the last event for it in the deltas says: present with the same value (SHA-256),
//     create and mod revisions, version and lease, or absent.
//
// p, when set, follows the restore (as RestoreOptions.Progress) and the checks (phase
// "check"). The temporary directory is removed afterwards. Problems go into the report; the error is
// for a verification that could not run (no temporary directory, ctx ended).
func VerifyDeep(ctx context.Context, store *snapstore.Store, want catalog.RestorePlan, tempDir string, lg *slog.Logger, p *progress.Progress) (DeepVerifyReport, error) {
	start := time.Now()
	var rep DeepVerifyReport
	problem := func(key string, format string, args ...any) {
		rep.Problems = append(rep.Problems, catalog.Problem{Key: key, Err: fmt.Errorf(format, args...)})
	}
	dir, err := os.MkdirTemp(tempDir, "etcdbr-verify-*")
	if err != nil {
		return rep, fmt.Errorf("deep verification: %w", err)
	}
	defer os.RemoveAll(dir)
	cfg, err := verifyMemberConfig(filepath.Join(dir, "member"))
	if err != nil {
		return rep, fmt.Errorf("deep verification: %w", err)
	}

	lg.Info("deep verification: restoring the latest point", "dir", dir, "full", want.Full.Key, "deltas", len(want.Deltas), "revision", want.Revision)
	p.Reset("fetch") // the bytes of the restore alone, against its total
	res, err := Restore(ctx, store, cfg, catalog.Target{}, rebuild.RestoreOptions{Progress: p}, lg)
	if err != nil {
		if ctx.Err() != nil {
			return rep, fmt.Errorf("deep verification: %w", ctx.Err())
		}
		problem("", "the restore of the latest point failed: %w", err)
		rep.Duration = time.Since(start)
		return rep, nil
	}
	rep.Restore = res
	for _, bad := range res.Excluded {
		problem(bad.Key, "the restore had to leave it out: it failed verification")
	}
	if res.Snapshot.Key != want.Full.Key || len(res.Deltas) != len(want.Deltas) {
		problem("", "the restore read %s and %d deltas, the chain is %s and %d deltas", res.Snapshot.Key, len(res.Deltas), want.Full.Key, len(want.Deltas))
	}
	if res.Revision != want.Revision {
		problem("", "the restore ended at revision %d, the chain at %d", res.Revision, want.Revision)
	}

	p.SetPhase("check")
	sctx, cancel := context.WithTimeout(ctx, verifyStartTimeout)
	defer cancel()
	etcd, err := embedded.Start(sctx, cfg, lg)
	if err != nil {
		if ctx.Err() != nil {
			return rep, fmt.Errorf("deep verification: %w", ctx.Err())
		}
		problem("", "etcd does not start on the restored data dir: %w", err)
		rep.Duration = time.Since(start)
		return rep, nil
	}
	defer etcd.Close()
	if err := rep.checkMember(ctx, etcd.Client(), store, res, problem); err != nil {
		return rep, err
	}
	rep.Duration = time.Since(start)
	lg.Info("deep verification done", "revision", rep.Revision, "keys", rep.Keys, "keys_checked", rep.KeysChecked,
		"problems", len(rep.Problems), "took", rep.Duration)
	return rep, nil
}

// checkMember compares the running restored member with the restore's result and deltas.
func (rep *DeepVerifyReport) checkMember(ctx context.Context, cli *clientv3.Client, store *snapstore.Store, res RestoreResult, problem func(string, string, ...any)) error {
	all, err := cli.Get(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("deep verification: count the restored keys: %w", err)
	}
	rep.Revision, rep.Keys = all.Header.Revision, all.Count
	if rep.Revision != res.DataRevision {
		problem("", "etcd serves revision %d on the restored data dir, the restore built revision %d", rep.Revision, res.DataRevision)
	}
	last, err := verifyLastEvents(ctx, store, res.Deltas, res.Revision)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("deep verification: %w", ctx.Err())
		}
		problem("", "read the restored deltas again: %w", err)
		return nil
	}
	mismatches := 0
	for key, want := range last {
		got, err := cli.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("deep verification: get key %q: %w", key, err)
		}
		rep.KeysChecked++
		if diff := want.compare(got.Kvs); diff != "" {
			mismatches++
			if mismatches <= verifyMaxKeyProblems {
				problem("", "key %q in the restored member: %s", key, diff)
			}
		}
	}
	if mismatches > verifyMaxKeyProblems {
		problem("", "%d more keys differ from what the deltas say", mismatches-verifyMaxKeyProblems)
	}
	return nil
}

// verifyMemberConfig is a single member with its data in dir, on free loopback ports.
func verifyMemberConfig(dir string) (*embed.Config, error) {
	cfg := embed.NewConfig()
	cfg.Name = "etcdbr-verify"
	cfg.Dir = dir
	// etcd's own log would only add its error-level noise on a clean stop: what goes
	// wrong is reported by VerifyDeep.
	cfg.LogLevel = "fatal"
	client, err := verifyFreeURL()
	if err != nil {
		return nil, err
	}
	peer, err := verifyFreeURL()
	if err != nil {
		return nil, err
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.InitialClusterToken = "etcdbr-verify"
	return cfg, nil
}

// verifyFreeURL returns http://127.0.0.1:<port> for a port that was free a moment ago.
func verifyFreeURL() (url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return url.URL{}, fmt.Errorf("pick a loopback port: %w", err)
	}
	defer l.Close()
	return url.URL{Scheme: "http", Host: l.Addr().String()}, nil
}
