package testsuite

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// fragmentCluster writes n keys of 4 KiB through cli, deletes nine in ten, and compacts etcd's
// history at the end, so that every member's db holds mostly free pages; beforeCompact (when
// set) runs just before the compaction, while nothing is free yet.
func fragmentCluster(t *testing.T, cli *clientv3.Client, prefix string, n int, beforeCompact func()) {
	t.Helper()
	ctx := context.Background()
	value := strings.Repeat("v", 4096)
	const batch = 50
	for del := range 2 {
		var rev int64
		for i := 0; i < n; i += batch {
			var ops []clientv3.Op
			for j := i; j < min(i+batch, n); j++ {
				key := fmt.Sprintf("%s/%06d", prefix, j)
				switch {
				case del == 0:
					ops = append(ops, clientv3.OpPut(key, value))
				case j%10 != 0:
					ops = append(ops, clientv3.OpDelete(key))
				}
			}
			resp, err := cli.Txn(ctx).Then(ops...).Commit()
			if err != nil {
				t.Fatal(err)
			}
			rev = resp.Header.Revision
		}
		if del == 1 {
			if beforeCompact != nil {
				beforeCompact()
			}
			if _, err := cli.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// clusterDefrag is one "member defragmented" line of a member's log.
type clusterDefrag struct {
	by, member, role string
	started, ended   time.Time
	before, after    int64
}

var clusterDefragRE = regexp.MustCompile(`msg="member defragmented" .*member=(\S+) role=(\S+) size_before=(\d+) size_after=(\d+) .* started=(\S+) ended=(\S+)`)

// defrags are the defragmentations every member's etcdbr logged, by start.
func (c *cluster) defrags() []clusterDefrag {
	c.t.Helper()
	var out []clusterDefrag
	for i, p := range c.procs {
		if p == nil {
			continue
		}
		for _, line := range strings.Split(p.Output(), "\n") {
			m := clusterDefragRE.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			d := clusterDefrag{by: c.members[i].Name, member: m[1], role: m[2]}
			d.before, _ = strconv.ParseInt(m[3], 10, 64)
			d.after, _ = strconv.ParseInt(m[4], 10, 64)
			var err1, err2 error
			d.started, err1 = time.Parse(time.RFC3339Nano, m[5])
			d.ended, err2 = time.Parse(time.RFC3339Nano, m[6])
			if err1 != nil || err2 != nil {
				c.t.Fatalf("a defrag line with bad times: %s", line)
			}
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].started.Before(out[j].started) })
	return out
}

// waitDefrags waits until the members logged n defragmentations in all, and returns them.
func (c *cluster) waitDefrags(n int, timeout time.Duration) []clusterDefrag {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ds := c.defrags()
		if len(ds) >= n {
			return ds
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%d defragmentations logged after %v, want %d: %+v", len(ds), timeout, n, ds)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkRolling checks one round of defragmentations of the three members: each member once,
// by the leader's etcdbr, the followers first and the leader (itself) last, one at a time
// (each began after the one before it ended), each db file shrunk by more than half.
func checkRolling(t *testing.T, c *cluster, round []clusterDefrag, leader string) {
	t.Helper()
	seen := map[string]bool{}
	for i, d := range round {
		t.Logf("%s defragmented %s (%s) from %s to %s: %d -> %d bytes", d.by, d.member, d.role,
			d.started.Format(time.StampMicro), d.ended.Format(time.StampMicro), d.before, d.after)
		if d.by != leader {
			t.Errorf("%s's etcdbr defragmented %s: only the leader's (%s) does", d.by, d.member, leader)
		}
		if seen[d.member] {
			t.Errorf("%s defragmented twice in one round", d.member)
		}
		seen[d.member] = true
		wantRole := "follower"
		if i == len(round)-1 {
			wantRole = "leader"
			if d.member != leader {
				t.Errorf("the last member defragmented is %s, want the leader %s", d.member, leader)
			}
		}
		if d.role != wantRole || (wantRole == "follower" && d.member == leader) {
			t.Errorf("defrag %d of the round is of %s as %s, want a %s", i+1, d.member, d.role, wantRole)
		}
		if i > 0 && d.started.Before(round[i-1].ended) {
			t.Errorf("%s's defrag began at %s, before %s's ended at %s", d.member, d.started, round[i-1].member, round[i-1].ended)
		}
		if d.after*2 >= d.before {
			t.Errorf("%s's db shrank from %d to %d bytes only", d.member, d.before, d.after)
		}
	}
	if len(seen) != len(c.members) {
		t.Errorf("the round defragmented %d members, want %d", len(seen), len(c.members))
	}
}

// TestClusterDefragRolls: in a cluster of three `etcdbr run` members, the leader's etcdbr
// defragments every fragmented member, the followers first and itself last, one at a time,
// each db file shrinking by more than half (etcd's Status agrees). With a follower stopped it
// defragments nothing and says why (unhealthy); once the follower is back, the next round
// rolls through the three members again.
func TestClusterDefragRolls(t *testing.T) {
	t.Parallel()
	store := "file://" + t.TempDir() + "/store"
	c := newCluster(t, 3, store, "--defrag-min-free", "1MiB", "--defrag-min-free-ratio", "0.3", "--defrag-check-period", "200ms")
	c.startAll()
	li := c.leader(time.Minute)
	leader := c.members[li].Name
	cli := c.clientAll()

	var before [3]int64 // etcd's compaction frees pages but never shrinks the file
	fragmentCluster(t, cli, "/a", 2000, func() {
		for i := range c.members {
			st, err := c.memberStatus(i)
			if err != nil {
				t.Fatal(err)
			}
			before[i] = st.DbSize
		}
	})
	round := c.waitDefrags(3, 2*time.Minute)
	checkRolling(t, c, round, leader)
	for i, m := range c.members {
		st, err := c.memberStatus(i)
		if err != nil {
			t.Fatal(err)
		}
		if st.DbSize*2 >= before[i] {
			t.Errorf("etcd's Status of %s: db size %d after the defrag, %d before", m.Name, st.DbSize, before[i])
		}
	}
	if t.Failed() {
		return
	}

	// A follower down: the others are due again, and nothing happens.
	fi := (li + 1) % 3
	c.procs[fi].stop()
	fragmentCluster(t, c.client(li), "/b", 2000, nil)
	c.procs[li].waitLine(`reason=unhealthy member=`, 2*time.Minute)
	skip := c.procs[li].Output()
	if !strings.Contains(skip, "does not answer") {
		t.Errorf("the skip does not say which member does not answer:\n%s", skip)
	}
	if n := len(c.defrags()); n != 3 {
		t.Fatalf("%d defragmentations with a member down, want none after the first 3", n)
	}

	// The follower back: the next round rolls through all three.
	c.start(fi, c.args(fi, "new"))
	c.client(fi)
	all := c.waitDefrags(6, 2*time.Minute)
	if li2 := c.leader(time.Minute); li2 != li {
		t.Logf("the leader moved from %s to %s", leader, c.members[li2].Name)
	}
	checkRolling(t, c, all[3:], leader)
}
