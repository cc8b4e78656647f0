package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// rejoinMember is one member of the rejoin scenario's cluster.
type rejoinMember struct {
	Name, DataDir, Client, Peer string
	srv                         *server
}

// rejoinCluster is three members on loopback, each under etcdbr run (or, for the baseline's
// replaced member, plain etcd).
type rejoinCluster struct {
	cfg     config
	dir     string
	store   string
	members []*rejoinMember
}

// benchRejoin measures how long a member of a three-member cluster of etcdbr run whose data
// dir was wiped takes to be a promoted voter again, on its own (its etcdbr takes a full
// snapshot of the cluster, removes the stale member, adds it as a learner and starts etcd on
// no data; etcd sends it the db as a raft snapshot; the leader's etcdbr promotes it), beside what etcd
// itself needs for the same: another member wiped, removed and added back as a learner by
// hand, plain etcd started on no data, promoted as soon as etcd lets it (etcd refuses until
// the learner caught up). The db is filled to cfg.RejoinMiB first, in transactions small
// enough that the raft log is compacted: a new member gets a snapshot, not the log.
func benchRejoin(ctx context.Context, cfg config, dir string) ([]figure, error) {
	c, err := newRejoinCluster(cfg, filepath.Join(dir, "rejoin"))
	if err != nil {
		return nil, err
	}
	defer c.stopAll()
	for i := range c.members {
		if err := c.start(ctx, i, true, "new", ""); err != nil {
			return nil, err
		}
	}
	for _, m := range c.members {
		if _, err := m.srv.ready(ctx, readyTimeout); err != nil {
			return nil, err
		}
	}
	cli, err := c.client()
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	dbBytes, err := c.fill(ctx, cli)
	if err != nil {
		return nil, err
	}

	// etcdbr: a follower wiped and started again as a supervisor would.
	if err := c.settle(ctx); err != nil {
		return nil, err
	}
	leader, err := c.leader(ctx, cli)
	if err != nil {
		return nil, err
	}
	leaderLog := c.members[leader].srv.log.Name()
	var rejoinLog string
	f := (leader + 1) % len(c.members)
	cfg.progress("rejoin: %s wiped (db %d MiB); etcdbr run started again on no data", c.members[f].Name, dbBytes>>20)
	old, err := c.wipe(ctx, cli, f)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if err := c.start(ctx, f, true, "new", ""); err != nil {
		return nil, err
	}
	rejoinLog = c.members[f].srv.log.Name()
	br, err := c.waitVoter(ctx, cli, f, old, start, nil)
	if err != nil {
		return nil, fmt.Errorf("etcdbr: %w", err)
	}
	snapTook, err := membershipSnapshot(rejoinLog, leaderLog)
	if err != nil {
		return nil, err
	}
	cfg.progress("  a voter again after %.2f s (a learner after %.2f s; the full snapshot before the change took %.2f s)", br.voter, br.learner, snapTook.Seconds())

	// plain etcd: another follower, replaced by hand.
	if err := c.settle(ctx); err != nil {
		return nil, err
	}
	leader, err = c.leader(ctx, cli)
	if err != nil {
		return nil, err
	}
	g := (leader + 1) % len(c.members)
	if g == f {
		g = (g + 1) % len(c.members)
	}
	if g == leader {
		return nil, errors.New("rejoin: no second follower")
	}
	cfg.progress("rejoin baseline: %s wiped, removed and added back as a learner by hand; plain etcd started on no data", c.members[g].Name)
	old, err = c.wipe(ctx, cli, g)
	if err != nil {
		return nil, err
	}
	start = time.Now()
	id, initial, err := c.replaceByHand(ctx, cli, g, old)
	if err != nil {
		return nil, err
	}
	added := time.Since(start).Seconds()
	if err := c.start(ctx, g, false, "existing", initial); err != nil {
		return nil, err
	}
	promote := func(ctx context.Context) error {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := cli.MemberPromote(pctx, id)
		if err != nil && strings.Contains(err.Error(), "can only promote a learner member") && !strings.Contains(err.Error(), "in sync") {
			return nil // promoted already (by the leader's etcdbr)
		}
		return err
	}
	base, err := c.waitVoter(ctx, cli, g, old, start, promote)
	if err != nil {
		return nil, fmt.Errorf("plain etcd: %w", err)
	}
	base.learner = added
	cfg.progress("  a voter again after %.2f s (a learner after %.2f s)", base.voter, base.learner)

	fig := figure{
		Name:         fmt.Sprintf("a wiped member of 3 a voter again (db %d MiB)", dbBytes>>20),
		Etcdbr:       []value{{"wall_s", br.voter}, {"learner_s", br.learner}, {"full_snapshot_s", snapTook.Seconds()}},
		Baseline:     []value{{"wall_s", base.voter}, {"learner_s", base.learner}},
		BaselineName: "plain etcd, replaced by a script",
		Note: "from the wipe of a follower (SIGKILL, data dir removed) to a voter in the member list. etcdbr: etcdbr run started again on no data; " +
			"it takes a full snapshot of the cluster into the store, streamed from a peer (the restore point before a membership change), removes the stale member, " +
			"adds itself as a learner; etcd sends it the db as a raft snapshot; the leader's etcdbr (finding that fresh snapshot in the store) promotes it once caught up. " +
			"Baseline: what a script does with plain etcd, at once: remove the member and add it as a learner (both retried while etcd refuses: it holds membership changes back " +
			"until its voters have been connected for 5 s), start plain etcd on no data, promote it every 100 ms until etcd accepts (it refuses until the learner caught up). " +
			"Each side starts from a settled cluster (the previous change 6 s past, etcd's health interval, and any snapshot of the leader's done)",
	}
	fig.compare("wall_s")
	return []figure{fig}, nil
}

// newRejoinCluster places three members under dir on free loopback ports.
func newRejoinCluster(cfg config, dir string) (*rejoinCluster, error) {
	ports, err := freePorts(6)
	if err != nil {
		return nil, err
	}
	c := &rejoinCluster{cfg: cfg, dir: dir, store: "file://" + filepath.Join(dir, "store")}
	for i := range 3 {
		c.members = append(c.members, &rejoinMember{
			Name:    fmt.Sprintf("m%d", i),
			DataDir: filepath.Join(dir, fmt.Sprintf("m%d", i)),
			Client:  fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]),
			Peer:    fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
		})
	}
	return c, os.MkdirAll(dir, 0o755)
}

// initialCluster is the configured --initial-cluster.
func (c *rejoinCluster) initialCluster() string {
	var parts []string
	for _, m := range c.members {
		parts = append(parts, m.Name+"="+m.Peer)
	}
	return strings.Join(parts, ",")
}

// start starts member i: etcdbr run (with the cluster's --initial-cluster and state), or
// plain etcd with state and initial (the cluster's membership now).
func (c *rejoinCluster) start(ctx context.Context, i int, etcdbr bool, state, initial string) error {
	m := c.members[i]
	if initial == "" {
		initial = c.initialCluster()
	}
	etcdFlags := []string{
		"--name", m.Name, "--listen-client-urls", m.Client, "--advertise-client-urls", m.Client,
		"--listen-peer-urls", m.Peer, "--initial-advertise-peer-urls", m.Peer,
		"--initial-cluster", initial, "--initial-cluster-state", state, "--initial-cluster-token", "bench-rejoin",
		"--quota-backend-bytes", fmt.Sprint(int64(8 << 30)), "--log-level", "warn",
	}
	var clients []string
	for _, o := range c.members {
		clients = append(clients, o.Client)
	}
	var cmd *exec.Cmd
	name := "etcd"
	if etcdbr {
		name = "etcdbr"
		args := []string{"--log-format", "json", "run", "--data-dir", m.DataDir, "--store", c.store, "--listen-api=",
			"--cluster-endpoints", strings.Join(clients, ","), "--full-snapshot-schedule", "0 0 1 1 *", "--gc-period", "0",
			"--delta-snapshot-period", "0", "--learner-timeout", "1h"}
		cmd = exec.CommandContext(ctx, c.cfg.Bins.Etcdbr, append(append(args, "--"), etcdFlags...)...)
	} else {
		cmd = exec.CommandContext(ctx, c.cfg.Bins.Etcd, append([]string{"--data-dir", m.DataDir}, etcdFlags...)...)
	}
	log, err := os.Create(filepath.Join(c.dir, fmt.Sprintf("%s-%s-%d.log", m.Name, name, time.Now().UnixNano())))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = log, log
	ch, err := startChild(ctx, cmd, 0) // no memory figure of its members
	if err != nil {
		log.Close()
		return err
	}
	m.srv = &server{child: ch, Endpoint: m.Client, log: log}
	return nil
}

// stopAll stops every member still running.
func (c *rejoinCluster) stopAll() {
	for _, m := range c.members {
		if m.srv != nil && !m.srv.exited() {
			m.srv.stop(syscall.SIGTERM)
		}
	}
}

// client is a client of every member.
func (c *rejoinCluster) client() (*clientv3.Client, error) {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.Client)
	}
	return clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// leader is the index of the member that leads.
func (c *rejoinCluster) leader(ctx context.Context, cli *clientv3.Client) (int, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		for i, m := range c.members {
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			st, err := cli.Status(sctx, m.Client)
			cancel()
			if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
				return i, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return 0, errors.New("rejoin: no leader after a minute")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fill writes keys of cfg.ValueSize random letters, 32 to a transaction from 8 writers, until
// the leader's db holds cfg.RejoinMiB, and returns its size.
func (c *rejoinCluster) fill(ctx context.Context, cli *clientv3.Client) (int64, error) {
	target := int64(c.cfg.RejoinMiB) << 20
	perTxn := 32
	keys := int(target/int64(c.cfg.ValueSize+40)) + 1
	c.cfg.progress("rejoin: filling the cluster's db to %d MiB (%d keys of %d B, %d to a transaction)", c.cfg.RejoinMiB, keys, c.cfg.ValueSize, perTxn)
	start := time.Now()
	err := parallel(ctx, 8, func(ctx context.Context, w int) error {
		rng := rand.New(rand.NewPCG(c.cfg.Seed, uint64(w)))
		for base := w * perTxn; base < keys; base += 8 * perTxn {
			ops := make([]clientv3.Op, 0, perTxn)
			for k := base; k < min(base+perTxn, keys); k++ {
				ops = append(ops, clientv3.OpPut(fmt.Sprintf("/bench/rejoin/%09d", k), randomValue(rng, c.cfg.ValueSize)))
			}
			if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				return fmt.Errorf("rejoin: fill: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	var size int64
	for _, m := range c.members {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := cli.Status(sctx, m.Client)
		cancel()
		if err != nil {
			return 0, err
		}
		size = max(size, st.DbSize)
	}
	c.cfg.progress("  filled in %.1f s: db %d MiB", time.Since(start).Seconds(), size>>20)
	return size, nil
}

// wipe kills member i, removes its data dir, and returns its member ID before.
func (c *rejoinCluster) wipe(ctx context.Context, cli *clientv3.Client, i int) (uint64, error) {
	m := c.members[i]
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	st, err := cli.Status(sctx, m.Client)
	cancel()
	if err != nil {
		return 0, err
	}
	if _, err := m.srv.stop(syscall.SIGKILL); err != nil {
		return 0, err
	}
	return st.Header.MemberId, os.RemoveAll(m.DataDir)
}

// replaceByHand does what a person does for plain etcd: remove member old (etcd refuses
// while a voter connected less than 5 s ago: retried), add member i back as a learner, and
// return its ID and the --initial-cluster to start it with.
func (c *rejoinCluster) replaceByHand(ctx context.Context, cli *clientv3.Client, i int, old uint64) (uint64, string, error) {
	m := c.members[i]
	deadline := time.Now().Add(time.Minute)
	retry := func(f func(ctx context.Context) error) error {
		for {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := f(cctx)
			cancel()
			if err == nil || time.Now().After(deadline) || ctx.Err() != nil || !strings.Contains(err.Error(), "unhealthy cluster") {
				return err
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if err := retry(func(ctx context.Context) error { _, err := cli.MemberRemove(ctx, old); return err }); err != nil {
		return 0, "", fmt.Errorf("rejoin baseline: remove %x: %w", old, err)
	}
	var resp *clientv3.MemberAddResponse
	err := retry(func(ctx context.Context) (err error) {
		resp, err = cli.MemberAddAsLearner(ctx, []string{m.Peer})
		return err
	})
	if err != nil {
		return 0, "", fmt.Errorf("rejoin baseline: add %s as a learner: %w", m.Name, err)
	}
	var parts []string
	for _, mm := range resp.Members {
		name := mm.Name
		if mm.ID == resp.Member.ID {
			name = m.Name
		}
		for _, u := range mm.PeerURLs {
			parts = append(parts, name+"="+u)
		}
	}
	return resp.Member.ID, strings.Join(parts, ","), nil
}

// settle waits until the cluster is as a person would find it before a replacement: no
// learner, the leader's etcdbr done with any full snapshot of one, and 6 s past the last
// membership change (etcd holds changes back until its voters have been connected for 5 s).
func (c *rejoinCluster) settle(ctx context.Context) error {
	cli, err := c.client()
	if err != nil {
		return err
	}
	defer cli.Close()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := cli.MemberList(lctx)
		cancel()
		learners := 0
		if err == nil {
			for _, m := range resp.Members {
				if m.IsLearner {
					learners++
				}
			}
		}
		if err == nil && learners == 0 && !c.snapshotting() {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("rejoin: the cluster did not settle (%v, %d learners)", err, learners)
		}
		time.Sleep(200 * time.Millisecond)
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(6 * time.Second):
		return nil
	}
}

// snapshotting reports whether an etcdbr member's log shows a full snapshot asked for by its
// keeper ("a learner joined") that has not ended yet.
func (c *rejoinCluster) snapshotting() bool {
	for _, m := range c.members {
		if m.srv == nil || m.srv.exited() {
			continue
		}
		data, err := os.ReadFile(m.srv.log.Name())
		if err != nil {
			continue
		}
		asked := strings.Count(string(data), `"msg":"a learner joined: a full snapshot comes before`)
		ended := strings.Count(string(data), `"msg":"a fresh full snapshot is the restore point`) +
			strings.Count(string(data), `"msg":"the restore point of the membership change is in the store"`) +
			strings.Count(string(data), `"msg":"the full snapshot before a membership change failed`)
		if asked > ended {
			return true
		}
	}
	return false
}

// membershipSnapshot is how long the last full snapshot taken before a membership change
// took, from the JSON logs at paths (the joining member's, which streams it from a peer, and
// the leader's, whose runner takes it when no fresh one is in the store); 0 when none was
// taken.
func membershipSnapshot(paths ...string) (time.Duration, error) {
	var took time.Duration
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			return 0, err
		}
		asked := false
		for _, line := range strings.Split(string(data), "\n") {
			var l struct {
				Msg      string        `json:"msg"`
				Trigger  string        `json:"trigger"`
				Duration time.Duration `json:"duration"`
			}
			if json.Unmarshal([]byte(line), &l) != nil {
				continue
			}
			switch {
			case l.Msg == "full snapshot taken before a membership change" && l.Duration > 0:
				took = l.Duration
			case strings.HasPrefix(l.Msg, "a learner joined"):
				asked = true
			case asked && l.Msg == "full snapshot taken" && l.Trigger == "request":
				took = l.Duration
			}
		}
	}
	return took, nil
}

// rejoinTimes are the seconds from the wipe to each step.
type rejoinTimes struct{ learner, voter float64 }

// waitVoter follows the member list every 100 ms from start until member i is a voter under
// a new ID (not old), calling promote (if any) while it is a learner that started (etcd
// accepts once the learner caught up).
func (c *rejoinCluster) waitVoter(ctx context.Context, cli *clientv3.Client, i int, old uint64, start time.Time, promote func(context.Context) error) (rejoinTimes, error) {
	m := c.members[i]
	var t rejoinTimes
	deadline := start.Add(30 * time.Minute)
	for {
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := cli.MemberList(lctx)
		cancel()
		if err == nil {
			for _, mm := range resp.Members {
				if mm.ID == old || !slices.Contains(mm.PeerURLs, m.Peer) {
					continue
				}
				started := len(mm.ClientURLs) > 0
				if mm.IsLearner && t.learner == 0 {
					t.learner = time.Since(start).Seconds()
				}
				voter := started && !mm.IsLearner
				if !voter && started && promote != nil {
					voter = promote(ctx) == nil
				}
				if voter {
					t.voter = time.Since(start).Seconds()
					return t, nil
				}
			}
		}
		switch {
		case m.srv.exited():
			_, werr := m.srv.wait()
			return t, fmt.Errorf("%s ended (%v); its log: %s", m.Name, werr, m.srv.log.Name())
		case ctx.Err() != nil:
			return t, ctx.Err()
		case time.Now().After(deadline):
			return t, fmt.Errorf("%s is not a voter after 30 minutes; its log: %s", m.Name, m.srv.log.Name())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
