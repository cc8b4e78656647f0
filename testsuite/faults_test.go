package testsuite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gocloud.dev/blob"

	"github.com/etcdbr/etcdbr/embedded/rebuild"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/internal/etcdtest"
	"github.com/etcdbr/etcdbr/internal/faultstore"
	"github.com/etcdbr/etcdbr/internal/storetest"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
	"github.com/etcdbr/etcdbr/supervisor"
)

// faultRow is one fault of the matrix, as each kind of operation meets it: an upload's
// requests (PUT of the object or of its parts), a read's (GET of the object), garbage
// collection's (DELETE, or the listing for the faults of a response body).
type faultRow struct {
	name   string
	upload faultstore.Fault
	read   faultstore.Fault
	gc     faultstore.Fault
	gcOp   faultstore.Op
	times  int // how many requests get the fault
	// fails names the columns where the operation must fail (clearly, naming the object)
	// instead of succeeding after retries.
	fails []string
	// columns, when set, are the only columns the row runs in.
	columns []string
	// damaged: the newest full snapshot reads back damaged every time, and the operation
	// records it (a read fault that passes must leave no damage record).
	damaged bool
	// extraTries are the tries of a request a fault may cost besides its retry: MinIO's
	// refusal of the request the SDK signed with the skewed clock it was told.
	extraTries int
}

// The matrix's columns.
const (
	colFull    = "full"
	colDelta   = "delta"
	colGC      = "gc"
	colVerify  = "verify"
	colRestore = "restore"
)

var faultColumns = []string{colFull, colDelta, colGC, colVerify, colRestore}

// faultRows: every fault hits twice in a row (once for the ones that take seconds), which the
// operation must ride out with the retries it has, as a user runs it.
var faultRows = []faultRow{
	{
		name:   "latency 1.5s",
		upload: faultstore.Fault{Kind: faultstore.Latency, Delay: 1500 * time.Millisecond},
		read:   faultstore.Fault{Kind: faultstore.Latency, Delay: 1500 * time.Millisecond},
		gc:     faultstore.Fault{Kind: faultstore.Latency, Delay: 1500 * time.Millisecond}, gcOp: faultstore.OpDelete,
		times: 2,
	},
	{
		name:   "500",
		upload: faultstore.Fault{Kind: faultstore.Status, Status: http.StatusInternalServerError},
		read:   faultstore.Fault{Kind: faultstore.Status, Status: http.StatusInternalServerError},
		gc:     faultstore.Fault{Kind: faultstore.Status, Status: http.StatusInternalServerError}, gcOp: faultstore.OpDelete,
		times: 2,
	},
	{
		name:   "502",
		upload: faultstore.Fault{Kind: faultstore.Status, Status: http.StatusBadGateway},
		read:   faultstore.Fault{Kind: faultstore.Status, Status: http.StatusBadGateway},
		gc:     faultstore.Fault{Kind: faultstore.Status, Status: http.StatusBadGateway}, gcOp: faultstore.OpList,
		times: 2,
	},
	{
		name:   "503 SlowDown",
		upload: faultstore.Fault{Kind: faultstore.SlowDown},
		read:   faultstore.Fault{Kind: faultstore.SlowDown},
		gc:     faultstore.Fault{Kind: faultstore.SlowDown}, gcOp: faultstore.OpDelete,
		times: 2,
	},
	{
		name:   "reset mid-body",
		upload: faultstore.Fault{Kind: faultstore.ResetRequest, After: 1024},
		read:   faultstore.Fault{Kind: faultstore.ResetResponse, After: 200},
		gc:     faultstore.Fault{Kind: faultstore.ResetResponse, After: 200}, gcOp: faultstore.OpList,
		times: 2,
	},
	{
		// An upload's or a delete's answer is lost after the server applied it.
		name:   "truncated",
		upload: faultstore.Fault{Kind: faultstore.Truncate},
		read:   faultstore.Fault{Kind: faultstore.Truncate, After: 200},
		gc:     faultstore.Fault{Kind: faultstore.Truncate}, gcOp: faultstore.OpDelete,
		times: 2,
	},
	{
		// One byte flipped in transit: an upload's body (the server refuses it: its
		// checksum does not match), or one read of the newest full snapshot, which is
		// intact in the store: read again, it verifies, and nothing is recorded damaged.
		name:   "corrupted once",
		upload: faultstore.Fault{Kind: faultstore.Corrupt, After: 100},
		read:   faultstore.Fault{Kind: faultstore.Corrupt, After: 100},
		gc:     faultstore.Fault{Kind: faultstore.Corrupt, After: 300}, gcOp: faultstore.OpList,
		times: 1,
		fails: []string{colFull},
	},
	{
		// Every read of the newest full snapshot is corrupt, as if it were damaged in the
		// store: verify reports it by name, the restore falls back to the older full
		// snapshot and the deltas after it; both record it damaged.
		name:    "corrupted always",
		read:    faultstore.Fault{Kind: faultstore.Corrupt, After: 100},
		columns: []string{colVerify, colRestore},
		fails:   []string{colVerify},
		damaged: true,
	},
	{
		// A read, a listing or a delete that goes silent for longer than anyone waits:
		// etcdbr gives up on the connection after its read timeout (a minute) and goes on.
		// An upload's request stalls for 3 s before its body is read (uploads have no read
		// timeout while they send: see docs/faults.md; "unanswered" is the stall after).
		name:   "stall",
		upload: faultstore.Fault{Kind: faultstore.Stall, Delay: 3 * time.Second},
		read:   faultstore.Fault{Kind: faultstore.Stall, After: 200, Delay: time.Hour},
		gc:     faultstore.Fault{Kind: faultstore.Stall, Delay: time.Hour}, gcOp: faultstore.OpDelete,
		times: 1,
	},
	{
		// An upload sent in full whose answer never comes: etcdbr gives up on it after a
		// minute without an answer and sends it again.
		name:    "unanswered",
		upload:  faultstore.Fault{Kind: faultstore.Unanswered, Delay: time.Hour},
		columns: []string{colFull, colDelta},
		times:   1,
	},
	{
		name:   "RequestTimeTooSkewed",
		upload: faultstore.Fault{Kind: faultstore.TooSkewed, Skew: time.Hour},
		read:   faultstore.Fault{Kind: faultstore.TooSkewed, Skew: time.Hour},
		gc:     faultstore.Fault{Kind: faultstore.TooSkewed, Skew: time.Hour}, gcOp: faultstore.OpDelete,
		// Once: a second answer would contradict the first (the same server saying the
		// client is skewed whether it signs with the client's time or with the server's).
		times:      1,
		extraTries: 1,
	},
	{
		name:   "Date 1h off",
		upload: faultstore.Fault{Kind: faultstore.SkewDate, Skew: time.Hour},
		read:   faultstore.Fault{Kind: faultstore.SkewDate, Skew: time.Hour},
		gc:     faultstore.Fault{Kind: faultstore.SkewDate, Skew: time.Hour}, gcOp: faultstore.OpList,
		// Once: the SDK takes the Date as the server's clock and signs the next request
		// with it, which MinIO (with the right clock) refuses, and the SDK corrects again.
		times: 1,
	},
}

// faultEnv is what every cell shares: the MinIO bucket, the source etcd (an `etcdbr run`
// that backed itself up into seed/ and keeps running, idle) and the data its backups hold.
type faultEnv struct {
	svc     storetest.Service
	bucket  string
	raw     *blob.Bucket // the whole bucket, straight to MinIO
	src     member
	want    etcdtest.Dump
	oldFull catalog.Snapshot // the seed's first full snapshot (revision 1), continued by its deltas
	newFull catalog.Snapshot // the seed's full snapshot at want.Revision
	slots   chan struct{}    // bounds the cells running at once
}

// TestFaultMatrix runs etcdbr's store operations through a faulty network in front of a
// real MinIO (faultstore.Proxy): a full snapshot upload (`etcdbr snapshot --once`), delta
// uploads (`etcdbr run`), garbage collection (`etcdbr gc`), `etcdbr verify` and a restore,
// each under every fault of faultRows. Every cell: the operation succeeds after bounded
// retries, or fails clearly naming the object; afterwards the store, read straight from
// MinIO, verifies clean with no incomplete upload; a restore gives exactly the source's
// data; `etcdbr run` serves etcd throughout. The figures (faults, requests, time from the
// first fault to the operation's end) are logged as a table (docs/faults.md).
func TestFaultMatrix(t *testing.T) {
	svc := storetest.RequireService(t, storetest.S3)
	env := newFaultEnv(t, svc)
	var (
		mu      sync.Mutex
		results []cellResult
	)
	t.Run("cells", func(t *testing.T) {
		for _, row := range faultRows {
			for _, col := range faultColumns {
				if row.columns != nil && !slices.Contains(row.columns, col) {
					continue
				}
				t.Run(row.name+"/"+col, func(t *testing.T) {
					t.Parallel()
					env.slots <- struct{}{}
					defer func() { <-env.slots }()
					res := env.runCell(t, row, col)
					mu.Lock()
					results = append(results, res)
					mu.Unlock()
				})
			}
		}
		for col, run := range map[string]func(*testing.T) cellResult{colFull: env.diskFullFull, colDelta: env.diskFullDelta} {
			t.Run("disk full (file store)/"+col, func(t *testing.T) {
				t.Parallel()
				env.slots <- struct{}{}
				defer func() { <-env.slots }()
				res := run(t)
				t.Logf("%s", res)
				mu.Lock()
				results = append(results, res)
				mu.Unlock()
			})
		}
		t.Run("outage/delta", func(t *testing.T) {
			t.Parallel()
			env.slots <- struct{}{}
			defer func() { <-env.slots }()
			res := env.outage(t)
			t.Logf("%s", res)
			mu.Lock()
			results = append(results, res)
			mu.Unlock()
		})
	})
	t.Logf("fault matrix (faults injected / requests of the operation / first fault to the end of the operation; outcome):\n%s",
		faultTable(results))
}

func newFaultEnv(t *testing.T, svc storetest.Service) *faultEnv {
	ctx := context.Background()
	env := &faultEnv{svc: svc, bucket: storetest.NewBucketName(), slots: make(chan struct{}, 5)}
	if err := svc.CreateBucket(ctx, env.bucket); err != nil {
		t.Fatal(err)
	}
	raw, err := svc.Bucket(ctx, env.bucket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	env.raw = raw

	seed := svc.URL(env.bucket, "seed")
	env.src = newMember(t, t.TempDir())
	// No garbage collection of the seed: the cells copy it for minutes, and at the turn of a
	// clock hour the exponential policy keeps only the newest full snapshot of the hour
	// before, which left the gc and restore cells a seed without its older chain.
	start(t, env.src.runArgs(seed, "--full-snapshot-schedule", "@daily", "--delta-snapshot-period", "1s", "--gc-period", "0"))
	cli := client(t, env.src.ClientURL)
	env.oldFull = waitFull(t, seed, 1, time.Minute)
	if _, err := (etcdtest.Workload{Seed: 11, Keys: 400, Overwrites: 60, Deletes: 30, LeasedKeys: 12}).Run(ctx, cli); err != nil {
		t.Fatal(err)
	}
	if env.want, err = etcdtest.Take(ctx, cli, 0); err != nil {
		t.Fatal(err)
	}
	waitStoreRevision(t, seed, env.want.Revision, time.Minute)
	code, out := runToExit(t, []string{"snapshot", "--once", "--endpoints", env.src.ClientURL, "--store", seed})
	if code != 0 {
		t.Fatalf("etcdbr snapshot --once: exit code %d:\n%s", code, out)
	}
	env.newFull = waitFull(t, seed, env.want.Revision, time.Minute)
	if env.newFull.Key == env.oldFull.Key || len(deltas(t, seed)) == 0 {
		t.Fatalf("the seed holds %v and %d deltas: want two full snapshots and deltas between them", fulls(t, seed), len(deltas(t, seed)))
	}
	return env
}

// faultCell is one cell's store: a prefix of its own in the bucket, seen straight (direct)
// or through a proxy of its own (faulty).
type faultCell struct {
	prefix         string
	proxy          *faultstore.Proxy
	direct, faulty string
	began          time.Time
}

var cellNames = strings.NewReplacer(" ", "-", "/", "-", ".", "")

func (e *faultEnv) newCell(t *testing.T, row faultRow, col string, seeded bool) *faultCell {
	ctx := context.Background()
	// The column comes first: no prefix may end in a kind's folder name ("...full/").
	c := &faultCell{prefix: "cells/" + strings.ToLower(cellNames.Replace(col+"-"+row.name))}
	p, err := faultstore.Start(e.svc.Endpoint, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	c.proxy = p
	c.direct = e.svc.URL(e.bucket, c.prefix)
	c.faulty = storetest.Service{Kind: storetest.S3, Endpoint: p.URL()}.URL(e.bucket, c.prefix)
	if seeded {
		it := e.raw.List(&blob.ListOptions{Prefix: "seed/"})
		for {
			obj, err := it.Next(ctx)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := e.raw.Copy(ctx, c.prefix+strings.TrimPrefix(obj.Key, "seed"), obj.Key, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	return c
}

// set arms the cell's proxy with rule and starts the clock.
func (c *faultCell) set(rule faultstore.Rule) {
	c.began = time.Now()
	c.proxy.Set(rule)
}

// cellResult is what a cell measured.
type cellResult struct {
	row, col string
	faults   int           // requests that got the fault
	requests int           // requests the operation made through the proxy
	recover  time.Duration // from the first fault to the end of the operation
	gaps     []time.Duration
	outcome  string
	// maxTries is the most times one request of an object (kind and key) that met a fault
	// was made, maxFaults the faults it met: retried once per fault, it was made
	// maxFaults+1 times.
	maxTries, maxFaults int
}

// measure reads the proxy's log after the operation ended at end.
func (c *faultCell) measure(row, col string, end time.Time, outcome string) cellResult {
	res := cellResult{row: row, col: col, outcome: outcome}
	reqs := c.proxy.Requests()
	var first time.Time
	for i, r := range reqs {
		if r.At.Before(c.began) {
			continue
		}
		res.requests++
		if r.Fault == "" {
			continue
		}
		res.faults++
		if first.IsZero() {
			first = r.At
		}
		// The wait before the request that retried this one (the next of the same kind
		// and key).
		for _, next := range reqs[i+1:] {
			if next.Op == r.Op && next.Key == r.Key {
				res.gaps = append(res.gaps, next.At.Sub(r.Done))
				break
			}
		}
	}
	if !first.IsZero() {
		res.recover = end.Sub(first)
	}
	type request struct {
		op  faultstore.Op
		key string
	}
	tries, faults := map[request]int{}, map[request]int{}
	for _, r := range reqs {
		if r.At.Before(c.began) || r.Done.After(end) || r.Op == faultstore.OpList {
			continue // an operation may list the same prefix more than once
		}
		q := request{r.Op, r.Key}
		tries[q]++
		if r.Fault != "" {
			faults[q]++
		}
	}
	for q, n := range faults {
		if tries[q] > res.maxTries {
			res.maxTries, res.maxFaults = tries[q], n
		}
	}
	return res
}

func (e *faultEnv) runCell(t *testing.T, row faultRow, col string) cellResult {
	rule := faultstore.Rule{Times: row.times}
	switch col {
	case colFull, colDelta:
		rule.Ops, rule.Fault = []faultstore.Op{faultstore.OpPut}, row.upload
		rule.Key = "/" + string(catalog.KindFull) + "/"
		if col == colDelta {
			rule.Key = "/" + string(catalog.KindDelta) + "/"
		}
	case colGC:
		rule.Ops, rule.Fault = []faultstore.Op{row.gcOp}, row.gc
	default:
		rule.Ops, rule.Fault, rule.Key = []faultstore.Op{faultstore.OpGet}, row.read, e.newFull.Key
	}
	wantFail := slices.Contains(row.fails, col)
	var res cellResult
	switch col {
	case colFull:
		res = e.fullCell(t, row, rule, wantFail)
	case colDelta:
		res = e.deltaCell(t, row, rule)
	case colGC:
		res = e.gcCell(t, row, rule, wantFail)
	case colVerify:
		res = e.verifyCell(t, row, rule, wantFail)
	case colRestore:
		res = e.restoreCell(t, row, rule, wantFail)
	}
	if res.faults < 1 {
		t.Fatalf("%s/%s: the fault never hit (%d requests)", row.name, col, res.requests)
	}
	if row.times > 0 && res.faults > row.times {
		t.Fatalf("%s/%s: %d faults injected, the rule allows %d", row.name, col, res.faults, row.times)
	}
	if res.maxTries > res.maxFaults*(1+row.extraTries)+1 {
		t.Fatalf("%s/%s: one request was made %d times for %d faults: retries are not bounded by the faults", row.name, col, res.maxTries, res.maxFaults)
	}
	t.Logf("%s", res)
	return res
}

// fullCell: `etcdbr snapshot --once` uploads a full snapshot of the source through the fault.
func (e *faultEnv) fullCell(t *testing.T, row faultRow, rule faultstore.Rule, wantFail bool) cellResult {
	c := e.newCell(t, row, colFull, false)
	c.set(rule)
	code, out := runToExit(t, []string{"snapshot", "--once", "--endpoints", e.src.ClientURL, "--store", c.faulty})
	end := time.Now()
	c.proxy.Clear()
	outcome := "uploaded"
	if code != 0 {
		outcome = "failed, naming the object"
		if _, answer, ok := strings.Cut(lastLine(out), "api error "); ok {
			code, _, _ := strings.Cut(answer, ":")
			outcome += " and the store's answer " + code
		}
		if !wantFail {
			t.Fatalf("etcdbr snapshot --once through %s: exit code %d:\n%s", row.name, code, out)
		}
		if !strings.Contains(out, "full/") {
			t.Fatalf("etcdbr snapshot --once failed without naming the object:\n%s", out)
		}
		if n := len(fulls(t, c.direct)); n != 0 {
			t.Fatalf("a failed upload left %d full snapshots in the store", n)
		}
	} else {
		if wantFail {
			t.Fatalf("etcdbr snapshot --once through %s succeeded, want a failure:\n%s", row.name, out)
		}
		got := fulls(t, c.direct)
		if len(got) != 1 || got[0].Revision != e.want.Revision || !strings.Contains(out, got[0].Key) {
			t.Fatalf("after etcdbr snapshot --once (%s): the store holds %v", strings.TrimSpace(out), got)
		}
	}
	e.checkClean(t, c)
	return c.measure(row.name, colFull, end, outcome)
}

// gcCell: `etcdbr gc` keeps one full snapshot of a store that holds two and the deltas
// between them.
func (e *faultEnv) gcCell(t *testing.T, row faultRow, rule faultstore.Rule, wantFail bool) cellResult {
	c := e.newCell(t, row, colGC, true)
	c.set(rule)
	code, out := runToExit(t, []string{"gc", "--store", c.faulty, "--gc-policy", "limit", "--max-backups", "1"})
	end := time.Now()
	c.proxy.Clear()
	outcome := "collected"
	if code != 0 {
		outcome = "failed: " + lastLine(out)
		if !wantFail {
			t.Fatalf("etcdbr gc through %s: exit code %d:\n%s", row.name, code, out)
		}
	} else {
		if wantFail {
			t.Fatalf("etcdbr gc through %s succeeded, want a failure:\n%s", row.name, out)
		}
		got := fulls(t, c.direct)
		if len(got) != 1 || got[0].Key != e.newFull.Key {
			t.Fatalf("after etcdbr gc: the store holds the full snapshots %v, want only %s", got, e.newFull.Key)
		}
	}
	e.checkClean(t, c)
	return c.measure(row.name, colGC, end, outcome)
}

// verifyCell: `etcdbr verify` reads every object; the fault hits the newest full snapshot.
func (e *faultEnv) verifyCell(t *testing.T, row faultRow, rule faultstore.Rule, wantFail bool) cellResult {
	c := e.newCell(t, row, colVerify, true)
	c.set(rule)
	code, out := runToExit(t, []string{"verify", "--store", c.faulty})
	end := time.Now()
	c.proxy.Clear()
	outcome := "OK"
	switch {
	case code == 0 && wantFail:
		t.Fatalf("etcdbr verify through %s passed, want the object reported:\n%s", row.name, out)
	case code == 0 && !strings.Contains(out, "\nOK\n"):
		t.Fatalf("etcdbr verify: exit code 0 without OK:\n%s", out)
	case code != 0 && !wantFail:
		t.Fatalf("etcdbr verify through %s: exit code %d:\n%s", row.name, code, out)
	case code != 0:
		if !strings.Contains(out, e.newFull.Key) {
			t.Fatalf("etcdbr verify did not name %s:\n%s", e.newFull.Key, out)
		}
		outcome = "reported " + e.newFull.Key
	}
	e.checkDamage(t, c, row)
	e.checkClean(t, c)
	return c.measure(row.name, colVerify, end, outcome)
}

// restoreCell restores the latest point in-process (supervisor.Restore, what `etcdbr
// restore` runs) through the fault, and compares every key with the source's.
func (e *faultEnv) restoreCell(t *testing.T, row faultRow, rule faultstore.Rule, wantFail bool) cellResult {
	c := e.newCell(t, row, colRestore, true)
	store := openStore(t, c.faulty)
	defer store.Close()
	cfg := embeddedtest.NewConfig(t)
	c.set(rule)
	res, err := supervisor.Restore(context.Background(), store, cfg, catalog.Target{}, rebuild.RestoreOptions{}, nil)
	end := time.Now()
	c.proxy.Clear()
	if err != nil {
		if !wantFail {
			t.Fatalf("restore through %s: %v", row.name, err)
		}
		e.checkClean(t, c)
		return c.measure(row.name, colRestore, end, "failed: "+err.Error())
	}
	if wantFail {
		t.Fatalf("restore through %s succeeded from %s, want a failure", row.name, res.Snapshot.Key)
	}
	if res.Revision != e.want.Revision {
		t.Fatalf("restored revision %d, want %d", res.Revision, e.want.Revision)
	}
	if diff := etcdtest.Diff(e.want, pitrDump(t, cfg), 20); len(diff) > 0 {
		t.Fatalf("restored through %s from %s and %d deltas: the data differs from the source's:\n%s",
			row.name, res.Snapshot.Key, len(res.Deltas), strings.Join(diff, "\n"))
	}
	outcome := fmt.Sprintf("restored from %s", res.Snapshot.Key)
	if res.Snapshot.Key == e.newFull.Key {
		outcome = "restored"
	} else if !row.damaged {
		t.Fatalf("restored from %s, not from the newest full snapshot %s, which is intact", res.Snapshot.Key, e.newFull.Key)
	}
	e.checkDamage(t, c, row)
	e.checkClean(t, c)
	return c.measure(row.name, colRestore, end, outcome)
}

// checkDamage checks the damage records of the cell's store: the newest full snapshot is
// recorded damaged when every read of it was (row.damaged), and nothing otherwise.
func (e *faultEnv) checkDamage(t *testing.T, c *faultCell, row faultRow) {
	t.Helper()
	store := openStore(t, c.direct)
	defer store.Close()
	l, err := store.ListBackups(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	damaged, err := store.DamagedIn(context.Background(), l.Fulls, l.Deltas)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	if row.damaged {
		want = 1
		if _, ok := damaged[e.newFull.Key]; !ok {
			t.Fatalf("%s read back damaged every time and is not recorded damaged (records: %v)", e.newFull.Key, damaged)
		}
	}
	if len(damaged) != want {
		t.Fatalf("the store records %d damaged objects, want %d: %v", len(damaged), want, damaged)
	}
}

// checkClean checks the cell's store straight from MinIO: every object reads back intact,
// the deltas form a chain, and no upload was left incomplete.
func (e *faultEnv) checkClean(t *testing.T, c *faultCell) {
	t.Helper()
	ctx := context.Background()
	store := openStore(t, c.direct)
	defer store.Close()
	l, err := store.ListBackups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Fulls)+len(l.Deltas) > 0 { // else a failed first upload: nothing to verify
		rep, err := snapstore.Verify(ctx, store, snapstore.VerifyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK() {
			t.Fatalf("the store %s after the fault: %v", c.prefix, rep.Problems)
		}
	}
	uploads, err := e.svc.IncompleteUploads(ctx, e.bucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range uploads {
		if strings.HasPrefix(u, c.prefix+"/") {
			t.Fatalf("an incomplete upload of %s is left in the store", u)
		}
	}
}

func lastLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return lines[len(lines)-1]
}

func (r cellResult) String() string {
	gaps := make([]string, len(r.gaps))
	for i, g := range r.gaps {
		gaps[i] = g.Round(10 * time.Millisecond).String()
	}
	return fmt.Sprintf("%s x %s: %d faults, %d requests, recovered in %v (waits before retries: %s); %s",
		r.row, r.col, r.faults, r.requests, r.recover.Round(100*time.Millisecond), strings.Join(gaps, " "), r.outcome)
}

// faultTable formats the results as a Markdown table, rows in faultRows' order.
func faultTable(results []cellResult) string {
	var b strings.Builder
	b.WriteString("| fault | " + strings.Join(faultColumns, " | ") + " |\n|---")
	b.WriteString(strings.Repeat("|---", len(faultColumns)) + "|\n")
	var rows []string
	for _, r := range faultRows {
		rows = append(rows, r.name)
	}
	rows = append(rows, "outage", "disk full (file store)")
	for _, row := range rows {
		line := "| " + row
		found := false
		for _, col := range faultColumns {
			cell := ""
			for _, r := range results {
				if r.row == row && r.col == col {
					cell = fmt.Sprintf("%d/%d, %v", r.faults, r.requests, r.recover.Round(100*time.Millisecond))
					if !strings.HasPrefix(r.outcome, "uploaded") && !strings.HasPrefix(r.outcome, "collected") &&
						r.outcome != "OK" && r.outcome != "restored" && r.outcome != "delta stored" {
						cell += "; " + r.outcome
					}
					found = true
				}
			}
			line += " | " + cell
		}
		if found {
			b.WriteString(line + " |\n")
		}
	}
	return b.String()
}
