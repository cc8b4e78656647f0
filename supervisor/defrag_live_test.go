package supervisor

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/internal/etcdtest"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// fragment writes keys of 4 KiB (n in all), deletes all but every tenth, and returns the
// revision after the deletes; nothing is compacted yet, so nothing is free to reclaim.
func fragment(t *testing.T, cli *clientv3.Client, prefix string, n int) int64 {
	t.Helper()
	ctx := context.Background()
	value := strings.Repeat("v", 4096)
	const batch = 50
	for i := 0; i < n; i += batch {
		var ops []clientv3.Op
		for j := i; j < min(i+batch, n); j++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("%s/%06d", prefix, j), value))
		}
		_, err := cli.Txn(ctx).Then(ops...).Commit()
		require.NoError(t, err)
	}
	var rev int64
	for i := 0; i < n; i += batch {
		var ops []clientv3.Op
		for j := i; j < min(i+batch, n); j++ {
			if j%10 != 0 {
				ops = append(ops, clientv3.OpDelete(fmt.Sprintf("%s/%06d", prefix, j)))
			}
		}
		resp, err := cli.Txn(ctx).Then(ops...).Commit()
		require.NoError(t, err)
		rev = resp.Header.Revision
	}
	return rev
}

// defragLines are the "member defragmented" lines of a log, with their intervals.
type defragLine struct {
	member, role   string
	started, ended time.Time
	before, after  int64
}

var defragLineRE = regexp.MustCompile(`msg="member defragmented" .*member=(\S+) role=(\S+) size_before=(\d+) size_after=(\d+) .* started=(\S+) ended=(\S+)`)

func defragLines(t *testing.T, log string) []defragLine {
	t.Helper()
	var out []defragLine
	for _, line := range strings.Split(log, "\n") {
		m := defragLineRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		var d defragLine
		d.member, d.role = m[1], m[2]
		fmt.Sscan(m[3], &d.before)
		fmt.Sscan(m[4], &d.after)
		d.started, d.ended = mustTime(t, m[5]), mustTime(t, m[6])
		out = append(out, d)
	}
	return out
}

// TestDefragSingleMember: a member whose keys were mostly deleted and whose history etcd
// compacted is defragmented by its own etcdbr: etcd's Status says the db file shrank by more
// than half, every key (value, create and mod revision, version) is the same before and
// after at the same revision, and the log line and metrics say what was reclaimed.
func TestDefragSingleMember(t *testing.T) {
	l := startLive(t, func(c *Config) {
		c.Defrag = &DefragConfig{MinFree: 2 << 20, MinFreeRatio: 0.5, Period: 100 * time.Millisecond}
	})
	ctx := context.Background()
	endpoint := l.cfg.Etcd.ListenClientUrls[0].String()
	rev := fragment(t, l.cli, "/frag", 2000)
	before, err := l.cli.Status(ctx, endpoint)
	require.NoError(t, err)
	want, err := etcdtest.Take(ctx, l.cli, rev)
	require.NoError(t, err)
	require.Len(t, want.KVs, 200)
	// etcd's compaction frees the pages of the deleted revisions: only now is there
	// anything to reclaim (the db file does not shrink by itself).
	_, err = l.cli.Compact(ctx, rev, clientv3.WithCompactPhysical())
	require.NoError(t, err)

	l.waitFor("the member defragmented", func() bool { return len(defragLines(t, l.log.String())) > 0 })
	after, err := l.cli.Status(ctx, endpoint)
	require.NoError(t, err)
	t.Logf("db size before %d (in use %d), after %d (in use %d)", before.DbSize, before.DbSizeInUse, after.DbSize, after.DbSizeInUse)
	require.Less(t, after.DbSize, before.DbSize/2, "the db file shrank by more than half")

	got, err := etcdtest.Take(ctx, l.cli, rev)
	require.NoError(t, err)
	require.Empty(t, etcdtest.Diff(want, got, 10), "the same data at the same revision")
	require.Equal(t, rev, after.Header.Revision, "no revision was written by the defrag")

	lines := defragLines(t, l.log.String())
	require.Len(t, lines, 1)
	require.Equal(t, "leader", lines[0].role, "a single member leads")
	// The size logged is the file's right after the defrag; etcd's own commits since (its
	// consistent index, every 100 ms) may have grown it by a few pages before Status read it.
	require.LessOrEqual(t, lines[0].after, after.DbSize, "the size logged after the defrag")
	require.Less(t, after.DbSize-lines[0].after, int64(1<<20), "the size logged after the defrag is the file's then")
	require.Greater(t, lines[0].before, 2*lines[0].after)
	m := l.s.metrics.defrag
	require.Equal(t, 1.0, testutil.ToFloat64(m.defrags.WithLabelValues("succeeded")))
	require.Equal(t, float64(lines[0].before-lines[0].after), testutil.ToFloat64(m.reclaimed))
	require.Equal(t, 1, testutil.CollectAndCount(m.duration))
}

// TestNoDefragDuringRestore: a restore asked for while the member is due for a
// defragmentation never overlaps one. The member is made due while a (simulated) full
// snapshot reads it, which holds its defrag back (the skip says so); the restore is asked
// for then. The defragger stops (waiting for a defrag in flight) before the restore stops
// etcd, skips while the restore is asked for, and starts again only once etcd serves again.
func TestNoDefragDuringRestore(t *testing.T) {
	l := startLive(t, func(c *Config) {
		c.Defrag = &DefragConfig{MinFree: 1 << 20, MinFreeRatio: 0.3, Period: 20 * time.Millisecond}
	})
	ctx := context.Background()
	l.s.backendReads.RLock() // what a full snapshot of the member holds
	rev := fragment(t, l.cli, "/frag", 1000)
	_, err := l.cli.Compact(ctx, rev, clientv3.WithCompactPhysical())
	require.NoError(t, err)
	l.waitFor("the defrag held back by the snapshot", func() bool {
		return strings.Contains(l.log.String(), `msg="defragmentation skipped" component=defrag reason=snapshot`)
	})
	st, err := l.s.RequestRestore(ctx, catalog.Target{})
	l.s.backendReads.RUnlock()
	require.NoError(t, err)
	done, err := l.s.WaitRestore(ctx, st.ID)
	require.NoError(t, err)
	require.Equal(t, string(PhaseSucceeded), done.Phase, done.Error)
	require.NotNil(t, done.Ended)
	for _, d := range defragLines(t, l.log.String()) {
		overlaps := d.ended.After(done.Started) && d.started.Before(*done.Ended)
		require.False(t, overlaps, "a defrag from %s to %s overlaps the restore from %s to %s", d.started, d.ended, done.Started, *done.Ended)
	}
}
