package testsuite

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdbr/etcdbr/internal/etcdtest"
)

// The crash trials (docs/chaos.md): `etcdbr run` under writers that record every
// acknowledged put, killed with SIGKILL at a moment a seeded PRNG chooses, started again
// (sometimes on a wiped data dir), and checked. The environment chooses the run:
// ETCDBR_CHAOS_TRIALS (default 3, the short form of the suite), ETCDBR_CHAOS_SEED (default
// the time, printed) and ETCDBR_CHAOS_START (the number of the first trial, default 0).
const (
	chaosTrialsEnv = "ETCDBR_CHAOS_TRIALS"
	chaosSeedEnv   = "ETCDBR_CHAOS_SEED"
	chaosStartEnv  = "ETCDBR_CHAOS_START"

	// chaosPerMember is how many trials one member lives through (state accumulates: more
	// full snapshots, compactions, histories) before a fresh one starts.
	chaosPerMember = 5
	// chaosPeriod is the members' delta period; an acknowledged write older than it plus
	// chaosMargin at the kill must survive any restart (docs/deltas.md).
	chaosPeriod = time.Second
	chaosMargin = 500 * time.Millisecond
	// chaosPrefix holds every key the trials write.
	chaosPrefix = "/chaos/"
)

// The kill points a trial can hit, as the table names them.
const (
	pointIdle         = "writes only"
	pointFull         = "full snapshot"
	pointDelta        = "delta upload"
	pointGC           = "garbage collection"
	pointCompaction   = "compaction"
	pointLiveRestore  = "live restore"
	pointStartRestore = "start-up restore"
	pointStartOver    = "start-up, no restore in progress"
	pointFullUpload   = "full snapshot object being written"
	chaosModeRandom   = "random"
	chaosModeFull     = "full"
	chaosModeGC       = "gc"
	chaosModeDelta    = "delta"
	chaosModeCompact  = "compaction"
	chaosModeLive     = "live restore"
	// chaosWipeChance is the chance that a restart finds its data dir wiped.
	chaosWipeChance = 0.3
)

var chaosModes = []string{chaosModeRandom, chaosModeFull, chaosModeGC, chaosModeDelta, chaosModeCompact, chaosModeLive}

// chaosPut is one put (or delete) of a key: its value, whether it was acknowledged, and when
// (the acknowledgement's time, or the attempt's when none came).
type chaosPut struct {
	value   string
	deleted bool
	acked   bool
	at      time.Time
}

// chaosLog records, per key, the puts since the last check, in the order they were made
// (one writer owns a key and waits for each answer). After a check the value served is the
// key's only entry; an empty list is a key known to be absent.
type chaosLog struct {
	mu    sync.Mutex
	keys  map[string][]chaosPut
	acked atomic.Int64
}

func newChaosLog() *chaosLog { return &chaosLog{keys: map[string][]chaosPut{}} }

func (l *chaosLog) attempt(key, value string, deleted bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.keys[key] = append(l.keys[key], chaosPut{value: value, deleted: deleted, at: time.Now()})
	return len(l.keys[key]) - 1
}

func (l *chaosLog) ack(key string, i int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.keys[key][i].acked, l.keys[key][i].at = true, time.Now()
	l.acked.Add(1)
}

// chaosVerdict is what a check found.
type chaosVerdict struct {
	checked    int       // acknowledged writes the check covered
	lost       int       // acknowledged writes not served (neither they nor a later put of the key)
	beyondRPO  int       // of those, acknowledged before the cutoff
	unexpected int       // keys holding a value never put
	oldestLost time.Time // when the oldest lost write was acknowledged
	problems   []string  // the first few, for the report
}

// check compares the served keys with the log. An acknowledged put is served when the key
// holds its value or the value of any put made after it (an acknowledged delete: the key is
// absent, or holds a value put after it); it is lost otherwise. It is lost
// beyond the RPO when it was acknowledged at or before cutoff. Acks while a live restore
// ran are required like any other (etcd is frozen before its final delta). Then what is
// served becomes each key's only entry.
func (l *chaosLog) check(served map[string]string, cutoff time.Time) chaosVerdict {
	l.mu.Lock()
	defer l.mu.Unlock()
	var v chaosVerdict
	problem := func(format string, args ...any) {
		if len(v.problems) < 10 {
			v.problems = append(v.problems, fmt.Sprintf(format, args...))
		}
	}
	for key, puts := range l.keys {
		got, ok := served[key]
		at := -1 // the put (or delete) the key holds
		for i := len(puts) - 1; i >= 0; i-- {
			if (ok && !puts[i].deleted && puts[i].value == got) || (!ok && puts[i].deleted) {
				at = i
				break
			}
		}
		if ok && at < 0 {
			v.unexpected++
			problem("%s holds %q, never put", key, got)
		}
		for i, p := range puts {
			if !p.acked {
				continue
			}
			v.checked++
			if i <= at {
				continue
			}
			v.lost++
			if v.oldestLost.IsZero() || p.at.Before(v.oldestLost) {
				v.oldestLost = p.at
			}
			if !p.at.After(cutoff) {
				v.beyondRPO++
				problem("%s: the put of %.40q (deleted %v) acknowledged at %s (%v before the cutoff) is not served (holds %.40q, present %v)",
					key, p.value, p.deleted, p.at.Format("15:04:05.000"), cutoff.Sub(p.at).Round(time.Millisecond), got, ok)
			}
		}
		if ok {
			l.keys[key] = []chaosPut{{value: got, acked: true, at: time.Now()}}
		} else {
			l.keys[key] = nil
		}
	}
	for key, val := range served {
		if _, ok := l.keys[key]; !ok {
			v.unexpected++
			problem("%s holds %q, never written", key, val)
		}
	}
	sort.Strings(v.problems)
	return v
}

// chaosWriters put keys of their own one after the other until halted; every 7th operation
// of a writer deletes its key instead, and every 3rd put of writer 1 attaches a lease (an
// hour long: none expires during a trial).
type chaosWriters struct {
	cancel context.CancelFunc
	done   sync.WaitGroup
}

func startChaosWriters(endpoint string, n, trial int, log *chaosLog) (*chaosWriters, error) {
	ctx, cancel := context.WithCancel(context.Background())
	w := &chaosWriters{cancel: cancel}
	for i := range n {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			cancel()
			w.done.Wait()
			return nil, fmt.Errorf("writer client: %w", err)
		}
		w.done.Go(func() {
			defer cli.Close()
			var lease clientv3.LeaseID
			if i == 1 {
				gctx, gcancel := context.WithTimeout(ctx, 5*time.Second)
				if g, err := cli.Grant(gctx, 3600); err == nil {
					lease = g.ID
				}
				gcancel()
			}
			for j := 0; ctx.Err() == nil; j++ {
				key := fmt.Sprintf("%sw%d/%03d", chaosPrefix, i, j%100)
				// 1 KiB of noise after the name: deltas of some size, which take a while
				// to upload.
				noise := make([]byte, 512)
				rand.Read(noise)
				value := fmt.Sprintf("trial %d writer %d put %d %x", trial, i, j, noise)
				del := j%7 == 6
				at := log.attempt(key, value, del)
				pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
				var err error
				switch {
				case del:
					_, err = cli.Delete(pctx, key)
				case lease != 0 && j%3 == 0:
					_, err = cli.Put(pctx, key, value, clientv3.WithLease(lease))
				default:
					_, err = cli.Put(pctx, key, value)
				}
				pcancel()
				// A pace, not a synchronization: a few hundred puts a second, and no
				// busy loop of refused puts while etcd is down.
				pause := 3 * time.Millisecond
				if err == nil {
					log.ack(key, at)
				} else {
					pause = 50 * time.Millisecond
				}
				select {
				case <-ctx.Done():
				case <-time.After(pause):
				}
			}
		})
	}
	return w, nil
}

func (w *chaosWriters) halt() {
	w.cancel()
	w.done.Wait()
}

// chaosTally is the table of a run.
type chaosTally struct {
	trials, wipes                  int
	points                         map[string]int
	checked, lost, beyond, unknown int
	maxLostAge                     time.Duration // the longest a lost write had been acknowledged at the kill
	failures                       []string
}

// chaosMember is one member and its store across several trials.
type chaosMember struct {
	t       *testing.T
	first   int // the trial it started at
	dir     string
	m       member
	store   string
	api     *api
	apiAddr string
	p       *proc
	log     *chaosLog
	tmps    map[string]bool // temporary objects of the store seen so far
	last    string          // what the last trial did
}

func (c *chaosMember) args() []string {
	return c.m.runArgs(c.store,
		"--listen-api", c.apiAddr, "--log-format", "json", "--log-level", "debug",
		"--full-snapshot-schedule", "@every 6s", "--delta-snapshot-period", chaosPeriod.String(),
		"--gc-policy", "limit", "--max-backups", "3", "--gc-period", "1s",
		"--compact-after-revisions", "800", "--compact-period", "1s")
}

// newChaosMember starts a fresh member, waits for its first full snapshot and writes a few
// MiB of incompressible values, so that a full snapshot takes a while.
func newChaosMember(t *testing.T, trial int) (*chaosMember, error) {
	dir := t.TempDir()
	c := &chaosMember{t: t, first: trial, dir: dir, m: newMember(t, dir), store: "file://" + filepath.Join(dir, "store"),
		log: newChaosLog(), tmps: map[string]bool{}}
	c.apiAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	c.api = newAPI(t, "http://"+c.apiAddr)
	c.p = start(t, c.args())
	cli, err := c.serving()
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	if err := c.waitFor("the first full snapshot", time.Minute, func() bool { return len(fulls(t, c.store)) > 0 }); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for b := range 10 {
		var ops []clientv3.Op
		var keys []string
		for i := range 40 {
			val := make([]byte, 8<<10)
			rand.Read(val)
			key := fmt.Sprintf("%sbulk/%03d", chaosPrefix, b*40+i)
			ops = append(ops, clientv3.OpPut(key, string(val)))
			keys = append(keys, key)
			c.log.keys[key] = []chaosPut{{value: string(val)}}
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return nil, fmt.Errorf("bulk writes: %w", err)
		}
		for _, key := range keys {
			c.log.ack(key, 0)
		}
	}
	return c, nil
}

// serving waits until the member answers a linearizable read and returns a client of it.
func (c *chaosMember) serving() (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.m.ClientURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("client of %s: %w", c.m.ClientURL, err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := cli.Get(ctx, "health-probe")
		cancel()
		if err == nil {
			return cli, nil
		}
		select {
		case <-c.p.done:
			cli.Close()
			return nil, fmt.Errorf("etcdbr run exited (%v) before serving", c.p.err)
		default:
		}
		if time.Now().After(deadline) {
			cli.Close()
			return nil, fmt.Errorf("etcd at %s does not serve after 2m: %w", c.m.ClientURL, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitFor polls cond until it holds, at most timeout.
func (c *chaosMember) waitFor(what string, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("no %s after %v", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

// chaosLines parses the JSON lines of p from index from on.
func chaosLines(p *proc, from int) []logLine {
	p.mu.Lock()
	raw := slices.Clone(p.lines[min(from, len(p.lines)):])
	p.mu.Unlock()
	out := make([]logLine, 0, len(raw))
	for _, l := range raw {
		if m, err := parseJSONLine(l); err == nil {
			out = append(out, m)
		}
	}
	return out
}

func lineCount(p *proc) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.lines)
}

// msgMatches reports whether a log message begins with pattern or, when pattern ends with
// "$", is the rest of it.
func msgMatches(msg, pattern string) bool {
	if exact, ok := strings.CutSuffix(pattern, "$"); ok {
		return msg == exact
	}
	return strings.HasPrefix(msg, pattern)
}

// waitMsg waits until p prints a line whose message matches one of msgs after line
// from, at most timeout, and returns it with the time it was seen (ok false: none).
func waitMsg(p *proc, from int, timeout time.Duration, msgs ...string) (logLine, time.Time, bool) {
	deadline := time.After(timeout)
	for {
		for _, l := range chaosLines(p, from) {
			for _, m := range msgs {
				if msgMatches(l["msg"], m) {
					return l, time.Now(), true
				}
			}
		}
		from = max(from, lineCount(p))
		select {
		case <-p.notify:
		case <-p.done:
			return nil, time.Time{}, false
		case <-deadline:
			return nil, time.Time{}, false
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// inProgress reports whether the last line that starts an operation (a message matching one
// of begin) comes after the last line that ends one (end).
func inProgress(lines []logLine, begin, end []string) bool {
	last := func(patterns []string) int {
		for i := len(lines) - 1; i >= 0; i-- {
			for _, p := range patterns {
				if msgMatches(lines[i]["msg"], p) {
					return i
				}
			}
		}
		return -1
	}
	b := last(begin)
	return b >= 0 && b > last(end)
}

// newTmps returns the kinds (full, delta) of the temporary objects in the store not seen
// before: uploads a kill cut off.
func (c *chaosMember) newTmps() []string {
	var kinds []string
	root := strings.TrimPrefix(c.store, "file://")
	for _, kind := range []string{"full", "delta"} {
		matches, _ := filepath.Glob(filepath.Join(root, kind, "*.tmp"))
		for _, m := range matches {
			if !c.tmps[m] {
				c.tmps[m] = true
				kinds = append(kinds, kind)
			}
		}
	}
	return kinds
}

// classify names the kill points a process killed after printing lines was at.
func (c *chaosMember) classify(lines []logLine) []string {
	var points []string
	if inProgress(lines, []string{"taking full snapshot"}, []string{"full snapshot taken", "full snapshot abandoned", "full snapshot skipped", "full snapshot failed", "retrying full snapshot"}) {
		points = append(points, pointFull)
	}
	if inProgress(lines, []string{"garbage collection: deleting"}, []string{"garbage collection$", "garbage collection stopped",
		"garbage collection interrupted", "garbage collection failed", "garbage collection fenced", "garbage collection refused"}) {
		points = append(points, pointGC)
	}
	if inProgress(lines, []string{"compacting the backup chain"}, []string{"backup chain compacted", "nothing to compact", "compaction abandoned", "compaction of the backup chain failed"}) {
		points = append(points, pointCompaction)
	}
	if inProgress(lines, []string{"restore$"}, []string{"restore done", "restore failed"}) {
		points = append(points, pointLiveRestore)
	}
	if inProgress(lines, []string{"restore plan", "fetching full snapshot", "restoring etcd data dir", "replaying deltas"}, []string{"data dir restored", "restored etcd data dir", "etcd is ready", "backup chain compacted", "deltas replayed$"}) &&
		!slices.Contains(points, pointCompaction) && !slices.Contains(points, pointLiveRestore) {
		points = append(points, pointStartRestore)
	}
	for _, kind := range c.newTmps() {
		switch kind {
		case "delta":
			points = append(points, pointDelta)
		case "full":
			points = append(points, pointFullUpload)
		}
	}
	if len(points) == 0 {
		points = append(points, pointIdle)
	}
	slices.Sort(points)
	return slices.Compact(points)
}

// post sends a request to the member's API without waiting for the answer.
func (c *chaosMember) post(path, body string) {
	go func() {
		if resp, err := c.api.client.Post(c.api.base+path, "application/json", strings.NewReader(body)); err == nil {
			resp.Body.Close()
		}
	}()
}

// kill SIGKILLs the member's process and waits for it to end.
func (c *chaosMember) kill() (time.Time, error) {
	at := time.Now()
	if err := c.p.cmd.Process.Kill(); err != nil {
		return at, fmt.Errorf("kill: %w", err)
	}
	select {
	case <-c.p.done:
	case <-time.After(time.Minute):
		return at, errors.New("etcdbr run still runs a minute after SIGKILL")
	}
	return at, nil
}

// chaosSleep waits d: the seeded delay before a kill, the experiment itself.
func chaosSleep(d time.Duration) { time.Sleep(d) }

// uniform draws a duration from [lo, hi].
func uniform(rng *mrand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
}

// trial runs one trial: writes, a kill at a chosen moment, a restart (on a wiped data dir
// sometimes, killed again during its restore sometimes), the checks. A returned error is a
// failure of the trial; the tally counts what it hit and found.
func (c *chaosMember) trial(k int, rng *mrand.Rand, tally *chaosTally) error {
	t := c.t
	w, err := startChaosWriters(c.m.ClientURL, 2, k, c.log)
	if err != nil {
		return err
	}
	defer w.halt()
	mode := chaosModes[rng.IntN(len(chaosModes))]
	from := lineCount(c.p)
	var killAt time.Time
	switch mode {
	case chaosModeRandom:
		chaosSleep(uniform(rng, 300*time.Millisecond, 4*time.Second))
	case chaosModeFull:
		chaosSleep(uniform(rng, 500*time.Millisecond, 2*time.Second))
		c.post("/v1/snapshots/full", "")
		if _, _, ok := waitMsg(c.p, from, 30*time.Second, "taking full snapshot"); ok {
			chaosSleep(uniform(rng, 0, 100*time.Millisecond))
		}
	case chaosModeGC:
		// Garbage collection runs every second and after each full snapshot; it deletes
		// once the store holds more full snapshots than it keeps.
		chaosSleep(uniform(rng, 500*time.Millisecond, 2*time.Second))
		c.post("/v1/snapshots/full", "")
		if _, _, ok := waitMsg(c.p, from, 15*time.Second, "garbage collection: deleting"); ok {
			// Deleting a few files takes milliseconds.
			chaosSleep(uniform(rng, 0, 3*time.Millisecond))
		}
	case chaosModeDelta:
		// A delta is uploaded every period: aim at the start of the next upload.
		if l, seen, ok := waitMsg(c.p, from, 10*time.Second, "delta taken"); ok {
			took, _ := strconv.ParseInt(l["duration"], 10, 64)
			d := time.Duration(took)
			chaosSleep(time.Until(seen.Add(chaosPeriod - d + uniform(rng, 0, 2*d+5*time.Millisecond))))
		}
	case chaosModeCompact:
		if _, _, ok := waitMsg(c.p, from, 15*time.Second, "compacting the backup chain"); ok {
			chaosSleep(uniform(rng, 0, time.Second))
		}
	case chaosModeLive:
		chaosSleep(uniform(rng, 500*time.Millisecond, 2*time.Second))
		c.post("/v1/restore", "{}")
		if _, _, ok := waitMsg(c.p, from, 30*time.Second, "restore$"); ok {
			chaosSleep(uniform(rng, 0, 800*time.Millisecond))
		}
	}
	if killAt, err = c.kill(); err != nil {
		return err
	}
	w.halt()
	points := c.classify(chaosLines(c.p, from))

	// Start again: on the same data dir, or on a wiped one (a restore from the store at
	// start), killed once more during that restore sometimes.
	wiped := rng.Float64() < chaosWipeChance
	startKill := false
	if wiped {
		tally.wipes++
		if err := os.RemoveAll(c.m.DataDir); err != nil {
			return fmt.Errorf("wipe the data dir: %w", err)
		}
		if startKill = rng.IntN(2) == 0; startKill {
			c.p = start(t, c.args())
			if _, _, ok := waitMsg(c.p, 0, time.Minute, "restore plan", "fetching full snapshot"); ok {
				chaosSleep(uniform(rng, 0, 700*time.Millisecond))
			}
			if _, err := c.kill(); err != nil {
				return err
			}
			startPoints := c.classify(chaosLines(c.p, 0))
			if slices.Equal(startPoints, []string{pointIdle}) {
				startPoints = []string{pointStartOver}
			}
			points = append(points, startPoints...)
		}
	}
	slices.Sort(points)
	points = slices.Compact(points)
	for _, p := range points {
		tally.points[p]++
	}
	c.last = fmt.Sprintf("mode %s, kill points %v, data dir wiped %v, killed again during that start %v", mode, points, wiped, startKill)
	c.p = start(t, c.args())
	cli, err := c.serving()
	if err != nil {
		return fmt.Errorf("after the kill (%s, points %v, wiped %v): %w", mode, points, wiped, err)
	}
	defer cli.Close()
	return c.check(k, killAt, wiped, mode, points, cli, tally)
}

// check runs the three checks of a trial on the restarted member.
func (c *chaosMember) check(k int, killAt time.Time, wiped bool, mode string, points []string, cli *clientv3.Client, tally *chaosTally) error {
	t := c.t
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	what := fmt.Sprintf("mode %s, points %v, data dir wiped %v", mode, points, wiped)

	// (a) every acknowledged write older than the period (plus a margin) at the kill is
	// served, or a later put of its key; with the data dir kept, every acknowledged write.
	resp, err := cli.Get(ctx, chaosPrefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("read the keys (%s): %w", what, err)
	}
	served := map[string]string{}
	for _, kv := range resp.Kvs {
		served[string(kv.Key)] = string(kv.Value)
	}
	v := c.log.check(served, killAt.Add(-chaosPeriod-chaosMargin))
	tally.checked += v.checked
	tally.lost += v.lost
	tally.beyond += v.beyondRPO
	tally.unknown += v.unexpected
	if !v.oldestLost.IsZero() {
		tally.maxLostAge = max(tally.maxLostAge, killAt.Sub(v.oldestLost))
	}
	switch {
	case v.beyondRPO > 0 || v.unexpected > 0:
		return fmt.Errorf("%d acknowledged writes lost beyond the RPO, %d keys with values never put (%s):\n%s",
			v.beyondRPO, v.unexpected, what, strings.Join(v.problems, "\n"))
	case v.lost > 0 && !wiped:
		return fmt.Errorf("%d acknowledged writes lost though the data dir was kept (%s)", v.lost, what)
	}

	// (b) the store restores to its newest point exactly: what the member serves there.
	var flushed struct {
		Revision int64 `json:"revision"`
	}
	if code := c.api.call(http.MethodPost, "/v1/snapshots/delta", "", &flushed); code != http.StatusOK {
		return fmt.Errorf("flush the deltas (%s): %d", what, code)
	}
	scratch := newMember(t, filepath.Join(c.dir, fmt.Sprintf("restore-%d", k)))
	scratch.Name = c.m.Name
	args := append([]string{"restore", "--exact", "--keep-store-cluster", "--data-dir", scratch.DataDir, "--store", c.store, "--"}, scratch.etcdFlags()...)
	if code, out := runToExit(t, args); code != 0 {
		return fmt.Errorf("etcdbr restore of the store's newest point (%s): exit %d\n%s", what, code, out)
	}
	got := dumpDataDir(t, scratch, scratch.DataDir)
	if got.Revision < flushed.Revision {
		return fmt.Errorf("the store's newest point is revision %d, the member was at %d when its deltas were flushed (%s)", got.Revision, flushed.Revision, what)
	}
	want, err := etcdtest.Take(ctx, cli, got.Revision)
	if err != nil {
		return fmt.Errorf("dump the member at revision %d (%s): %w", got.Revision, what, err)
	}
	if diff := etcdtest.Diff(want, got, 10); len(diff) > 0 {
		return fmt.Errorf("the store's newest point differs from what the member serves at revision %d (%s):\n%s", got.Revision, what, strings.Join(diff, "\n"))
	}
	os.RemoveAll(filepath.Dir(scratch.DataDir))

	// (c) every object verifies, and no cut-off upload looks like a backup.
	if code, out := runToExit(t, []string{"verify", "--store", c.store}); code != 0 {
		return fmt.Errorf("etcdbr verify (%s): exit %d\n%s", what, code, out)
	}
	return nil
}

// TestChaos runs crash trials (docs/chaos.md) and prints their table.
func TestChaos(t *testing.T) {
	trials, start := 3, 0
	seed := uint64(time.Now().UnixNano())
	for env, dst := range map[string]*int{chaosTrialsEnv: &trials, chaosStartEnv: &start} {
		if s := os.Getenv(env); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				t.Fatalf("%s=%q: want a number", env, s)
			}
			*dst = n
		}
	}
	if s := os.Getenv(chaosSeedEnv); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: want a number", chaosSeedEnv, s)
		}
		seed = n
	}
	if os.Getenv(chaosTrialsEnv) == "" {
		t.Parallel() // the short form runs beside the rest of the suite
	}
	t.Logf("crash trials %d..%d, seed %d", start, start+trials-1, seed)
	tally := &chaosTally{points: map[string]int{}}
	began := time.Now()
	t.Cleanup(func() { t.Log(tally.table(seed, time.Since(began))) })

	var c *chaosMember
	for k := start; k < start+trials; k++ {
		if c == nil || k-c.first >= chaosPerMember {
			if c != nil {
				c.p.stop()
				os.RemoveAll(c.dir) // the disk of one member at a time
			}
			var err error
			if c, err = newChaosMember(t, k); err != nil {
				t.Fatalf("trial %d: a fresh member: %v", k, err)
			}
		}
		rng := mrand.New(mrand.NewPCG(seed, uint64(k)))
		tally.trials++
		err := c.trial(k, rng, tally)
		t.Logf("trial %d (%s): %s: %v", k, time.Since(began).Round(time.Second), c.last, err)
		if err != nil {
			tally.failures = append(tally.failures, fmt.Sprintf("trial %d: %v\n  reproduce: make chaos SEED=%d START=%d TRIALS=%d", k, err, seed, c.first, k-c.first+1))
			t.Errorf("trial %d (seed %d): %v\noutput of the last etcdbr run:\n%s", k, seed, err, c.p.Output())
			c.p.cmd.Process.Kill()
			c = nil
		}
	}
	if c != nil {
		c.p.stop()
	}
}

// table formats the run's table.
func (tl *chaosTally) table(seed uint64, took time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\ncrash trials, seed %d, %v\n", seed, took.Round(time.Second))
	fmt.Fprintf(&b, "| trials | wiped data dirs | writes checked | lost within the RPO | oldest lost at the kill | lost beyond the RPO | values never put | failures |\n")
	fmt.Fprintf(&b, "| --- | --- | --- | --- | --- | --- | --- | --- |\n")
	fmt.Fprintf(&b, "| %d | %d | %d | %d | %v | %d | %d | %d |\n", tl.trials, tl.wipes, tl.checked, tl.lost-tl.beyond,
		tl.maxLostAge.Round(time.Millisecond), tl.beyond, tl.unknown, len(tl.failures))
	fmt.Fprintf(&b, "\n| kill point | kills |\n| --- | --- |\n")
	points := make([]string, 0, len(tl.points))
	for p := range tl.points {
		points = append(points, p)
	}
	sort.Strings(points)
	for _, p := range points {
		fmt.Fprintf(&b, "| %s | %d |\n", p, tl.points[p])
	}
	for _, f := range tl.failures {
		fmt.Fprintf(&b, "\n%s\n", f)
	}
	return b.String()
}
