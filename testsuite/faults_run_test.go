package testsuite

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/etcdbr/etcdbr/internal/faultstore"
)

// runCell is an `etcdbr run` of a new member whose store is a fault cell's, with deltas
// every second, its API on a port of its own, and writes going on.
type runCell struct {
	c      *faultCell
	p      *proc
	api    *api
	base   string
	writes *putLoop
}

func (e *faultEnv) startRunCell(t *testing.T, row faultRow, extra []string, env ...string) *runCell {
	c := e.newCell(t, row, colDelta, false)
	m := newMember(t, t.TempDir())
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	args := append([]string{"--full-snapshot-schedule", "@daily", "--delta-snapshot-period", "1s", "--listen-api", addr}, extra...)
	return readyWithWrites(t, m, &runCell{c: c, p: start(t, m.runArgs(c.faulty, args...), env...), base: "http://" + addr})
}

// waitUnready waits (up to within) until r's /readyz fails with a message that holds
// naming, and returns its answer; what names the wait in a failure.
func (r *runCell) waitUnready(t *testing.T, what string, within time.Duration, naming string) apiReady {
	t.Helper()
	var ready apiReady
	waitFor(t, what, within, func() bool {
		return r.api.call(http.MethodGet, "/readyz", "", &ready) == http.StatusServiceUnavailable &&
			strings.Contains(ready.Failed, naming)
	})
	return ready
}

// readyWithWrites waits until r's member is ready (its API at r.base) and starts writes into
// it, halted at the end of the test.
func readyWithWrites(t *testing.T, m member, r *runCell) *runCell {
	t.Helper()
	r.api = newAPI(t, r.base)
	cli := client(t, m.ClientURL)
	waitFor(t, "readiness", 2*time.Minute, func() bool { return r.api.call(http.MethodGet, "/readyz", "", nil) == http.StatusOK })
	r.writes = startPutLoop(cli, "/faults")
	t.Cleanup(func() {
		select {
		case <-r.writes.done:
		default:
			r.writes.halt()
		}
	})
	return r
}

// finishRunCell stops the writes, waits until the store holds the last of them and
// /readyz passes, reads the metrics of failed uploads, stops etcdbr and checks the store:
// intact, a delta chain without gaps, nothing incomplete.
func (e *faultEnv) finishRunCell(t *testing.T, r *runCell) (caughtUp time.Time, storeErrors, deltaFailures float64) {
	t.Helper()
	r.writes.halt()
	if len(r.writes.failed) > 0 {
		t.Fatalf("%d writes failed while the store was faulty (etcd must keep serving), the first: %v",
			len(r.writes.failed), r.writes.failed[0])
	}
	if r.writes.ok == 0 {
		t.Fatal("no write succeeded")
	}
	waitStoreRevision(t, r.c.direct, r.writes.last, 2*time.Minute)
	caughtUp = time.Now()
	waitFor(t, "readiness after the fault", 2*time.Minute, func() bool {
		return r.api.call(http.MethodGet, "/readyz", "", nil) == http.StatusOK
	})
	storeErrors, deltaFailures = r.failures(t)
	r.p.stop()
	checkChain(t, r.c.direct)
	e.checkClean(t, r.c)
	return caughtUp, storeErrors, deltaFailures
}

// failures returns what the metrics say of failed uploads: etcdbr_store_errors_total of
// uploads, and etcdbr_snapshot_failures_total of deltas (all reasons).
func (r *runCell) failures(t *testing.T) (storeErrors, deltaFailures float64) {
	t.Helper()
	fam := scrape(t, r.base)
	storeErrors = value(t, fam, "etcdbr_store_errors_total", "op", "upload")
	deltaFailures = sumSeries(fam["etcdbr_snapshot_failures_total"], "kind", "delta")
	return storeErrors, deltaFailures
}

// sumSeries adds up the counters of family f whose label name is value.
func sumSeries(f *dto.MetricFamily, name, value string) float64 {
	if f == nil {
		return 0
	}
	var sum float64
	for _, m := range f.Metric {
		for _, l := range m.Label {
			if l.GetName() == name && l.GetValue() == value {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// deltaCell: `etcdbr run` uploads its deltas through the fault while writes go on.
func (e *faultEnv) deltaCell(t *testing.T, row faultRow, rule faultstore.Rule) cellResult {
	r := e.startRunCell(t, row, nil)
	r.c.set(rule)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := r.c.proxy.Wait(ctx, func(reqs []faultstore.Request) bool { return countFaults(reqs) >= row.times }); err != nil {
		t.Fatalf("the delta uploads never met the fault %d times: %v", row.times, err)
	}
	end, storeErrors, deltaFailures := e.finishRunCell(t, r)
	if storeErrors != deltaFailures {
		t.Fatalf("the metrics disagree: %v failed uploads (etcdbr_store_errors_total), %v failed deltas (etcdbr_snapshot_failures_total)",
			storeErrors, deltaFailures)
	}
	res := r.c.measure(row.name, colDelta, end, "delta stored")
	if deltaFailures > 0 {
		res.outcome = fmt.Sprintf("delta stored after %v failed attempts (counted in the metrics)", deltaFailures)
	}
	return res
}

// outage: the store answers every delta upload with SlowDown until the fault is cleared.
// etcd keeps serving, /readyz fails on the backup check (naming the store's error), the
// metrics count the failures; once cleared, the deltas catch up and /readyz passes again.
// AWS_MAX_ATTEMPTS=2 lets each upload fail after one retry instead of ten (a user's own
// setting, docs/stores.md), so that the outage shows in seconds.
func (e *faultEnv) outage(t *testing.T) cellResult {
	row := faultRow{name: "outage"}
	r := e.startRunCell(t, row, []string{"--max-backup-age", "2s"}, "AWS_MAX_ATTEMPTS=2")
	r.c.set(faultstore.Rule{Ops: []faultstore.Op{faultstore.OpPut}, Key: "delta/", Fault: faultstore.Fault{Kind: faultstore.SlowDown}})
	ready := r.waitUnready(t, "readiness to fail naming the store's answer", 2*time.Minute, "SlowDown")
	failedAfter := time.Since(r.c.began)
	if !strings.Contains(ready.Failed, "backup:") || strings.Contains(ready.Failed, "etcd:") {
		t.Fatalf("readiness during the outage: %+v, want only the backup check failed", ready)
	}
	var storeErrors, deltaFailures float64
	waitFor(t, "the metrics to count two failed uploads", 2*time.Minute, func() bool {
		storeErrors, deltaFailures = r.failures(t)
		return storeErrors >= 2 && deltaFailures >= 2
	})
	// The store answers the prober's check (every 15 s) while it refuses every upload:
	// readiness taken after a check passed, with no upload failed since, goes on naming the
	// refusal.
	waitFor(t, "a readiness answer after the prober found the store reachable", 2*time.Minute, func() bool {
		asked := time.Now()
		r.api.call(http.MethodGet, "/readyz", "", &ready)
		var probed, failed time.Time
		for _, q := range r.c.proxy.Requests() {
			switch {
			case q.Done.After(asked):
			case q.Op == faultstore.OpList && q.Key == r.c.prefix+"/" && q.Status == http.StatusOK: // the check lists the prefix
				probed = q.Done
			case q.Fault != "":
				failed = q.Done
			}
		}
		return probed.After(failed) && probed.After(r.c.began)
	})
	if !strings.Contains(ready.Failed, "SlowDown") {
		t.Fatalf("readiness after the prober found the store reachable, while every upload fails: %+v", ready)
	}
	r.c.proxy.Clear()
	cleared := time.Now()
	waitFor(t, "readiness after the outage", 2*time.Minute, func() bool {
		return r.api.call(http.MethodGet, "/readyz", "", nil) == http.StatusOK
	})
	recovered := time.Since(cleared)
	e.finishRunCell(t, r)
	res := r.c.measure(row.name, colDelta, cleared.Add(recovered), "")
	res.recover = recovered
	t.Logf("/readyz during the outage: %s", ready.Failed)
	res.outcome = fmt.Sprintf("/readyz failed %v after the outage began, naming SlowDown (also after the prober's listing passed), "+
		"and passed %v after it ended; %v failed uploads counted (etcdbr_store_errors_total), %v failed deltas (etcdbr_snapshot_failures_total)",
		failedAfter.Round(100*time.Millisecond), recovered.Round(100*time.Millisecond), storeErrors, deltaFailures)
	return res
}

func countFaults(reqs []faultstore.Request) int {
	n := 0
	for _, r := range reqs {
		if r.Fault != "" {
			n++
		}
	}
	return n
}
