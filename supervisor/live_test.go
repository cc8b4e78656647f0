package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/embedded/rebuild"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/internal/etcdtest"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// take dumps the member, retrying while it restarts.
func take(t *testing.T, cli *clientv3.Client) etcdtest.Dump {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		d, err := etcdtest.Take(ctx, cli, 0)
		cancel()
		if err == nil {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("cannot read the member: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// requireSameData fails unless got holds exactly want's keys (value, create and mod
// revision, version, lease) and leases; the dumps' revisions are not compared.
func requireSameData(t *testing.T, want, got etcdtest.Dump) {
	t.Helper()
	want.Revision = got.Revision
	if diff := etcdtest.Diff(want, got, 20); len(diff) > 0 {
		t.Fatalf("the data differs:\n%s", strings.Join(diff, "\n"))
	}
}

// A restore to a past revision while running, over the API: the second request is refused;
// the restored member serves exactly the data of that revision, its revision is bumped
// past everything the store and etcd held, the store gets a fresh full snapshot of it, the
// delta chain continues from there without a gap, and Run never returned.
func TestRestoreWhileRunning(t *testing.T) {
	l := startLive(t, nil)
	ctx := context.Background()
	_, err := etcdtest.Workload{Seed: 1, Keys: 300, Overwrites: 100, Deletes: 30, LeasedKeys: 20}.Run(ctx, l.cli)
	require.NoError(t, err)
	atA := take(t, l.cli)
	revB, err := etcdtest.Workload{Seed: 2, Keys: 200, Overwrites: 100, Deletes: 50}.Run(ctx, l.cli)
	require.NoError(t, err)

	var flushed deltaAnswer
	require.Equal(t, http.StatusOK, l.call(http.MethodPost, "/v1/snapshots/delta", "", &flushed))
	require.Equal(t, revB, flushed.Revision)
	require.NotEmpty(t, flushed.Deltas)
	require.Equal(t, revB, flushed.Deltas[len(flushed.Deltas)-1].Revision)

	var accepted restoreAnswer
	require.Equal(t, http.StatusAccepted, l.call(http.MethodPost, "/v1/restore", fmt.Sprintf(`{"revision": %d}`, atA.Revision), &accepted))
	require.True(t, accepted.Restore.Running)
	var refused apiError
	require.Equal(t, http.StatusConflict, l.call(http.MethodPost, "/v1/restore", "{}", &refused))
	require.Contains(t, refused.Error, "already running")

	st, err := l.s.WaitRestore(ctx, accepted.Restore.ID)
	require.NoError(t, err)
	require.Equal(t, string(PhaseSucceeded), st.Phase, st.Error)
	require.Equal(t, atA.Revision, st.Revision)
	require.Equal(t, revB, st.MemberRevision)
	require.Equal(t, revB, st.StoreRevision)
	newHistory := revB + catalog.BumpMargin
	require.Equal(t, uint64(newHistory-atA.Revision), st.RevisionBump)
	require.Equal(t, newHistory, st.DataRevision, "the new history starts past the newest revision served")
	require.DirExists(t, st.MovedAside, "the replaced data dir is kept")

	got := take(t, l.cli)
	require.Equal(t, newHistory, got.Revision)
	requireSameData(t, atA, got)
	// Every watcher of the old history is told to relist: one that resumes from an old
	// revision, and one that saw the newest revision served (revB) and resumes right after it.
	for _, from := range []int64{atA.Revision, revB, revB + 1} {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		resp := <-l.cli.Watch(wctx, "", clientv3.WithPrefix(), clientv3.WithRev(from))
		cancel()
		require.Equal(t, newHistory, resp.CompactRevision, "a watch from revision %d is told the history was compacted", from)
	}
	hs, err := l.store.Histories(ctx)
	require.NoError(t, err)
	require.Len(t, hs, 1, "the store records the new history")
	require.Equal(t, newHistory, hs[0].Start)
	require.Equal(t, atA.Revision, hs[0].Revision)
	require.Equal(t, revB, hs[0].Served)
	require.Equal(t, TriggerRequest, hs[0].Trigger)
	require.WithinDuration(t, time.Now(), hs[0].Began, time.Hour, "when the restore built the data dir")
	require.False(t, hs[0].RevisionTime.IsZero())

	fulls, err := l.store.List(ctx, catalog.KindFull)
	require.NoError(t, err)
	fresh := fulls[len(fulls)-1]
	require.Equal(t, st.FreshFull, fresh.Key)
	require.Equal(t, newHistory, fresh.Revision)

	// The backups resumed: new writes continue the chain from the fresh full snapshot.
	_, err = etcdtest.Workload{Seed: 3, Keys: 50, Overwrites: 20}.Run(ctx, l.cli)
	require.NoError(t, err)
	res, err := l.s.FlushDeltas(ctx)
	require.NoError(t, err)
	require.Equal(t, newHistory+1, res.Deltas[0].From)
	fulls, deltas, err := l.s.listStore(ctx)
	require.NoError(t, err)
	win := catalog.RestorableWindow(fulls, deltas).WithHistories(hs)
	require.Empty(t, win.Gaps)
	require.Empty(t, win.Overlaps)
	require.Empty(t, win.Pruned, "the range between the histories is not taken for pruned backups")
	require.Equal(t, []catalog.Boundary{{From: revB + 1, To: newHistory - 1, After: flushed.Deltas[len(flushed.Deltas)-1].Key,
		Before: fresh.Key, History: hs[0]}}, win.Boundaries)
	require.Equal(t, res.Revision, win.Newest.Revision)

	// A revision between the two histories is refused with what would work.
	var between apiError
	require.Equal(t, http.StatusUnprocessableEntity, l.call(http.MethodPost, "/v1/restore", fmt.Sprintf(`{"revision": %d}`, revB+1), &between))
	require.Contains(t, between.Error, "lies between two histories")
	require.Contains(t, between.Error, fmt.Sprintf("--to-revision %d", revB))

	// The store restores the new history's newest point exactly.
	now := take(t, l.cli)
	require.Equal(t, res.Revision, now.Revision)
	requireSameData(t, now, restoreAndDump(t, l.store, catalog.Target{}))

	require.Equal(t, 1.0, testutil.ToFloat64(l.s.metrics.restores.WithLabelValues(TriggerRequest, "succeeded")))
	require.Equal(t, StateServing, l.s.Status().State)
	require.NoError(t, l.stop(), "Run ran through the restore and stopped cleanly")
}

// restoreAndDump restores target from store into a new member and dumps it.
func restoreAndDump(t *testing.T, store *snapstore.Store, target catalog.Target) etcdtest.Dump {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := embeddedtest.NewConfig(t)
	_, err := Restore(ctx, store, cfg, target, rebuild.RestoreOptions{}, nil)
	require.NoError(t, err)
	e, err := embedded.Start(ctx, cfg, nil)
	require.NoError(t, err)
	defer e.Close()
	d, err := etcdtest.Take(ctx, e.Client(), 0)
	require.NoError(t, err)
	return d
}

// raiseCorrupt raises a CORRUPT alarm through etcd's Maintenance API, as etcd's corruption
// checks do.
func raiseCorrupt(t *testing.T, cli *clientv3.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	status, err := cli.Status(ctx, cli.Endpoints()[0])
	require.NoError(t, err)
	_, err = pb.NewMaintenanceClient(cli.ActiveConnection()).Alarm(ctx, &pb.AlarmRequest{
		Action: pb.AlarmRequest_ACTIVATE, MemberID: status.Header.MemberId, Alarm: pb.AlarmType_CORRUPT})
	require.NoError(t, err)
}

// With --restore-on-corrupt a CORRUPT alarm restores the newest backup and restarts etcd:
// the member serves the same data at the same revision, without the alarm.
func TestCorruptAlarmRestores(t *testing.T) {
	l := startLive(t, func(c *Config) { c.RestoreOnCorrupt = true })
	ctx := context.Background()
	_, err := etcdtest.Workload{Seed: 4, Keys: 200, Overwrites: 50, Deletes: 20, LeasedKeys: 10}.Run(ctx, l.cli)
	require.NoError(t, err)
	want := take(t, l.cli)

	raiseCorrupt(t, l.cli)
	l.waitFor("the restore after the alarm", func() bool {
		r := l.s.Status().Restore
		return r != nil && !r.Running
	})
	st := l.s.Status()
	require.Equal(t, TriggerCorrupt, st.Restore.Trigger)
	require.Equal(t, string(PhaseSucceeded), st.Restore.Phase, st.Restore.Error)
	require.Equal(t, want.Revision, st.Restore.Revision, "the newest point: the final delta holds every write")
	require.Zero(t, st.Restore.RevisionBump)

	got := take(t, l.cli)
	require.Equal(t, want.Revision, got.Revision)
	requireSameData(t, want, got)
	alarms, err := l.cli.AlarmList(ctx)
	require.NoError(t, err)
	require.Empty(t, alarms.Alarms)
	l.waitFor("readiness", func() bool { return l.s.Readiness()[0].OK })
	require.Equal(t, 1.0, testutil.ToFloat64(l.s.metrics.restores.WithLabelValues(TriggerCorrupt, "succeeded")))
	_, err = l.cli.Put(ctx, "/after", "the restored member takes writes")
	require.NoError(t, err)
}

// Without --restore-on-corrupt a CORRUPT alarm is reported (readiness, metric, status) and
// full snapshots are suspended, until the alarm is disarmed.
func TestCorruptAlarmReported(t *testing.T) {
	l := startLive(t, nil)
	ctx := context.Background()
	raiseCorrupt(t, l.cli)
	l.waitFor("the alarm in readiness", func() bool {
		c := l.s.Readiness()[0]
		return !c.OK && strings.Contains(c.Message, "CORRUPT")
	})
	require.Equal(t, 1.0, testutil.ToFloat64(l.s.metrics.alarm.WithLabelValues("corrupt")))
	require.Len(t, l.s.Status().Etcd.Alarms, 1)
	var ready readyAnswer
	require.Equal(t, http.StatusServiceUnavailable, l.call(http.MethodGet, "/readyz", "", &ready))
	require.Contains(t, ready.Failed, "etcd: etcd raised an alarm: CORRUPT")

	_, err := l.s.TakeFull(ctx)
	require.ErrorIs(t, err, backup.ErrSkipped)
	var refused apiError
	require.Equal(t, http.StatusConflict, l.call(http.MethodPost, "/v1/snapshots/full", "", &refused))
	require.Contains(t, refused.Error, "CORRUPT")
	require.Nil(t, l.s.Status().Restore, "no restore without --restore-on-corrupt")

	status, err := l.cli.Status(ctx, l.cli.Endpoints()[0])
	require.NoError(t, err)
	_, err = l.cli.AlarmDisarm(ctx, &clientv3.AlarmMember{MemberID: status.Header.MemberId, Alarm: pb.AlarmType_CORRUPT})
	require.NoError(t, err)
	l.waitFor("readiness", func() bool { return l.s.Readiness()[0].OK })
	require.Equal(t, 0.0, testutil.ToFloat64(l.s.metrics.alarm.WithLabelValues("corrupt")))
	_, err = l.s.TakeFull(ctx)
	require.NoError(t, err)
}

// The API refuses what cannot be done, with a JSON error that says why: a target the store
// cannot reach (422), a wrong method (405), an unknown path (404), a bad body (400); and a
// restore of a member of a bigger cluster (409, checked without a cluster: the size comes
// from the configuration).
func TestAPIRefusals(t *testing.T) {
	l := startLive(t, nil)
	for _, c := range []struct {
		method, path, body string
		status             int
		want               string
	}{
		{http.MethodPost, "/v1/restore", `{"revision": 999999}`, http.StatusUnprocessableEntity, "no restorable chain"},
		{http.MethodPost, "/v1/restore", `{"time": "2000-01-01T00:00:00Z"}`, http.StatusUnprocessableEntity, "no restorable chain"},
		{http.MethodPost, "/v1/restore", `{"revision": "3"}`, http.StatusBadRequest, "want a whole number"},
		{http.MethodPost, "/v1/restore?wait=maybe", `{}`, http.StatusBadRequest, `wait="maybe": want true or false`},
		{http.MethodGet, "/v1/restore", "", http.StatusMethodNotAllowed, "use POST"},
		{http.MethodDelete, "/v1/status", "", http.StatusMethodNotAllowed, "use GET, HEAD"},
		{http.MethodPost, "/healthz", "", http.StatusMethodNotAllowed, "use GET, HEAD"},
		{http.MethodGet, "/v1/nothing", "", http.StatusNotFound, "no endpoint /v1/nothing"},
		{http.MethodGet, "/readyz?exclude=disk", "", http.StatusBadRequest, "no such check"},
	} {
		var e apiError
		require.Equal(t, c.status, l.call(c.method, c.path, c.body, &e), "%s %s", c.method, c.path)
		require.Equal(t, c.status, e.Status)
		require.Contains(t, e.Error, c.want, "%s %s", c.method, c.path)
	}
	require.Nil(t, l.s.Status().Restore, "nothing was restored")

	l.s.members = 3
	_, err := l.s.RequestRestore(context.Background(), catalog.Target{})
	require.ErrorIs(t, err, ErrClusterMember)
	require.Equal(t, http.StatusConflict, errorStatus(err))
}

// Stopping during a restore leaves a data dir that the next start serves: the old one or
// the new one, never neither.
func TestStopAfterRestoreRequest(t *testing.T) {
	l := startLive(t, nil)
	ctx := context.Background()
	_, err := etcdtest.Workload{Seed: 5, Keys: 100}.Run(ctx, l.cli)
	require.NoError(t, err)
	_, err = l.s.FlushDeltas(ctx)
	require.NoError(t, err)
	st, err := l.s.RequestRestore(ctx, catalog.Target{})
	require.NoError(t, err)
	require.NoError(t, l.stop())
	s := l.s.Status()
	require.NotNil(t, s.Restore)
	require.Equal(t, st.ID, s.Restore.ID)
	require.False(t, s.Restore.Running, "the restore ended with the run")
	v := datadir.Inspect(ctx, l.cfg.Etcd.Dir, "")
	require.Equal(t, datadir.StateValid, v.State, v.Reason)
	if _, err := os.Stat(l.cfg.Etcd.Dir); errors.Is(err, os.ErrNotExist) {
		t.Fatal("no data dir after the stop")
	}
}

// A restore to a time while running ends at the last revision observed at or before that
// time, and the new history still starts right after the newest revision.
func TestRestoreToTimeWhileRunning(t *testing.T) {
	l := startLive(t, nil)
	ctx := context.Background()
	_, err := etcdtest.Workload{Seed: 6, Keys: 200, Overwrites: 50, LeasedKeys: 10}.Run(ctx, l.cli)
	require.NoError(t, err)
	atA := take(t, l.cli)
	_, err = l.s.FlushDeltas(ctx)
	require.NoError(t, err)
	time.Sleep(20 * time.Millisecond)
	target := time.Now()
	time.Sleep(20 * time.Millisecond)
	revB, err := etcdtest.Workload{Seed: 7, Keys: 200, Overwrites: 80, Deletes: 40}.Run(ctx, l.cli)
	require.NoError(t, err)

	var done restoreAnswer
	body := fmt.Sprintf(`{"time": %q}`, target.UTC().Format(time.RFC3339Nano))
	require.Equal(t, http.StatusOK, l.call(http.MethodPost, "/v1/restore?wait=true", body, &done))
	r := done.Restore
	require.Equal(t, string(PhaseSucceeded), r.Phase, r.Error)
	require.Equal(t, atA.Revision, r.Revision)
	require.Equal(t, revB, r.StoreRevision, "the final delta reached the store before the restore")
	require.Equal(t, revB+catalog.BumpMargin, r.DataRevision)
	requireSameData(t, atA, take(t, l.cli))
}

// A restore that fails (every full snapshot in the store is damaged) leaves the data dir as
// it was: etcd starts again on it, serves the same data, and the status says why.
func TestRestoreFailureKeepsData(t *testing.T) {
	l := startLive(t, nil)
	ctx := context.Background()
	_, err := etcdtest.Workload{Seed: 8, Keys: 200, Overwrites: 50}.Run(ctx, l.cli)
	require.NoError(t, err)
	_, err = l.s.FlushDeltas(ctx)
	require.NoError(t, err)
	want := take(t, l.cli)
	fulls, err := l.store.List(ctx, catalog.KindFull)
	require.NoError(t, err)
	for _, f := range fulls {
		path := filepath.Join(strings.TrimPrefix(l.store.URL(), "file://"), filepath.FromSlash(f.Key))
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		b[len(b)/2] ^= 0xff
		require.NoError(t, os.WriteFile(path, b, 0o600))
	}

	var failed restoreAnswer
	require.Equal(t, http.StatusInternalServerError, l.call(http.MethodPost, "/v1/restore?wait=true", "{}", &failed))
	r := failed.Restore
	require.Equal(t, string(PhaseFailed), r.Phase)
	require.Contains(t, r.Error, fulls[0].Key, "the error names the damaged object")
	require.Empty(t, r.MovedAside)

	got := take(t, l.cli)
	require.Equal(t, want.Revision, got.Revision)
	requireSameData(t, want, got)
	st := l.s.Status()
	require.Equal(t, StateServing, st.State)
	require.Equal(t, "restore", st.LastError.Component)
	require.Equal(t, 1.0, testutil.ToFloat64(l.s.metrics.restores.WithLabelValues(TriggerRequest, "failed")))
	// etcd was frozen before the final delta; serving its old data again, it takes writes.
	alarms, err := l.cli.AlarmList(ctx)
	require.NoError(t, err)
	require.Empty(t, alarms.Alarms)
	_, err = l.cli.Put(ctx, "/after", "the member takes writes after a failed restore")
	require.NoError(t, err)
}

// Every restore while running moves the replaced data dir aside; once etcd started on the
// new one, the old dirs are pruned to the newest --keep-old-data-dirs, and the one kept is
// the dir the latest restore replaced, with that data.
func TestRestoresKeepNewestOldDataDirs(t *testing.T) {
	l := startLive(t, func(c *Config) { c.KeepOldDataDirs = 1 })
	ctx := context.Background()
	var aside []string
	for i := range 3 {
		_, err := etcdtest.Workload{Seed: uint64(20 + i), Keys: 50, Overwrites: 10}.Run(ctx, l.cli)
		require.NoError(t, err)
		_, err = l.s.FlushDeltas(ctx)
		require.NoError(t, err)
		st, err := l.s.RequestRestore(ctx, catalog.Target{})
		require.NoError(t, err)
		st, err = l.s.WaitRestore(ctx, st.ID)
		require.NoError(t, err)
		require.Equal(t, string(PhaseSucceeded), st.Phase, st.Error)
		require.DirExists(t, st.MovedAside)
		aside = append(aside, st.MovedAside)
		take(t, l.cli) // serving again
	}
	olds, err := datadir.OldDataDirs(l.s.cfg.Etcd.Dir)
	require.NoError(t, err)
	require.Equal(t, aside[len(aside)-1:], olds, "only the newest old data dir is kept")
	require.NoError(t, l.stop())
}

// A web page in a browser on the node must not drive the loopback API, which has no
// credential: requests from another origin, with a foreign Host (DNS rebinding), without a
// JSON Content-Type or with data after the JSON are refused before anything happens, while
// requests as curl sends them (no Origin, a loopback Host, JSON) still work.
func TestAPIRefusesBrowsers(t *testing.T) {
	l := startLive(t, func(c *Config) { c.API.AllowedHosts = []string{"etcd-0.example.com", "proxy.example.com:8443"} })
	_, port, err := net.SplitHostPort(l.s.APIAddr())
	require.NoError(t, err)
	do := func(method, path, body string, header map[string]string) (int, apiError) {
		t.Helper()
		req, err := http.NewRequest(method, l.url+path, strings.NewReader(body))
		require.NoError(t, err)
		for k, v := range header {
			if k == "Host" {
				req.Host = v
			} else {
				req.Header.Set(k, v)
			}
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, "application/json", resp.Header.Get("Content-Type"), "%s %s", method, path)
		var e apiError
		raw, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(raw, &e), "%s", raw)
		return resp.StatusCode, e
	}
	jsonCT := map[string]string{"Content-Type": "application/json"}
	with := func(h map[string]string, k, v string) map[string]string {
		m := map[string]string{k: v}
		for hk, hv := range h {
			if _, set := m[hk]; !set {
				m[hk] = hv
			}
		}
		return m
	}
	for _, c := range []struct {
		name         string
		method, path string
		body         string
		header       map[string]string
		status       int
		want         string
	}{
		{"a form of another site", http.MethodPost, "/v1/restore", `{"revision": 2}`,
			map[string]string{"Origin": "http://evil.example", "Content-Type": "text/plain"}, http.StatusForbidden, "Origin: http://evil.example"},
		{"fetch of another site with JSON", http.MethodPost, "/v1/restore", `{}`,
			with(jsonCT, "Origin", "http://evil.example"), http.StatusForbidden, "not from web pages"},
		{"an empty restore from another site", http.MethodPost, "/v1/restore", "",
			map[string]string{"Origin": "http://evil.example"}, http.StatusForbidden, "another origin"},
		{"a sandboxed page", http.MethodPost, "/v1/snapshots/full", "",
			map[string]string{"Origin": "null"}, http.StatusForbidden, "Origin: null"},
		{"another port of localhost", http.MethodPost, "/v1/snapshots/full", "",
			map[string]string{"Origin": "http://127.0.0.1:1"}, http.StatusForbidden, "another origin"},
		{"https origin of the http API", http.MethodPost, "/v1/snapshots/full", "",
			map[string]string{"Origin": "https://127.0.0.1:" + port}, http.StatusForbidden, "another origin"},
		{"a browser without Origin, cross-site", http.MethodPost, "/v1/restore", `{}`,
			with(jsonCT, "Sec-Fetch-Site", "cross-site"), http.StatusForbidden, "Sec-Fetch-Site: cross-site"},
		{"a browser without Origin, same-site", http.MethodPost, "/v1/snapshots/delta", "",
			map[string]string{"Sec-Fetch-Site": "same-site"}, http.StatusForbidden, "Sec-Fetch-Site: same-site"},
		{"DNS rebinding, restore", http.MethodPost, "/v1/restore", `{}`,
			with(jsonCT, "Host", "rebound.evil.example:"+port), http.StatusForbidden, "--api-allowed-hosts"},
		{"DNS rebinding, same-origin to the page", http.MethodPost, "/v1/restore", `{}`,
			with(with(jsonCT, "Host", "rebound.evil.example:"+port), "Origin", "http://rebound.evil.example:"+port), http.StatusForbidden, "DNS rebinding"},
		{"DNS rebinding, status", http.MethodGet, "/v1/status", "",
			map[string]string{"Host": "rebound.evil.example:" + port}, http.StatusForbidden, "is not an address of this API"},
		{"DNS rebinding, unknown path", http.MethodGet, "/v1/nothing", "",
			map[string]string{"Host": "rebound.evil.example:" + port}, http.StatusForbidden, "is not an address of this API"},
		{"localhost on another port", http.MethodGet, "/v1/status", "",
			map[string]string{"Host": "localhost:1"}, http.StatusForbidden, "call it as localhost:" + port},
		{"an allowed name on another port", http.MethodGet, "/v1/status", "",
			map[string]string{"Host": "proxy.example.com:443"}, http.StatusForbidden, "proxy.example.com:8443"},
		{"restore without Content-Type", http.MethodPost, "/v1/restore", `{"revision": 2}`,
			nil, http.StatusUnsupportedMediaType, "no Content-Type"},
		{"empty restore without Content-Type", http.MethodPost, "/v1/restore", "",
			nil, http.StatusUnsupportedMediaType, `send "Content-Type: application/json"`},
		{"restore as text/plain", http.MethodPost, "/v1/restore", `{"revision": 2}`,
			map[string]string{"Content-Type": "text/plain"}, http.StatusUnsupportedMediaType, `Content-Type "text/plain"`},
		{"restore as a form", http.MethodPost, "/v1/restore", `{"revision": 2}`,
			map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, http.StatusUnsupportedMediaType, "curl: --json"},
		{"data after the JSON", http.MethodPost, "/v1/restore", `{"revision":2} xyz`,
			jsonCT, http.StatusBadRequest, `more after its JSON object ("xyz")`},
		{"two JSON objects", http.MethodPost, "/v1/restore", `{}{"revision":2}`,
			jsonCT, http.StatusBadRequest, "more after its JSON object"},
		{"JSON null", http.MethodPost, "/v1/restore", `null`,
			jsonCT, http.StatusBadRequest, "must be a JSON object"},
		{"an empty body", http.MethodPost, "/v1/restore", "",
			jsonCT, http.StatusBadRequest, "the body is empty: send one JSON object"},
		{"revision 0", http.MethodPost, "/v1/restore", `{"revision": 0}`,
			jsonCT, http.StatusBadRequest, "revisions start at 1; send {} for the newest point"},
		{"an empty time", http.MethodPost, "/v1/restore", `{"time": ""}`,
			jsonCT, http.StatusBadRequest, "want an RFC 3339 time"},
		{"a body where none is taken", http.MethodPost, "/v1/snapshots/full", `{"revision": 2}`,
			jsonCT, http.StatusBadRequest, "takes no body"},
		{"a body too large", http.MethodPost, "/v1/restore", `{"time": "` + strings.Repeat("x", maxRequestBody) + `"}`,
			jsonCT, http.StatusRequestEntityTooLarge, "larger than"},
	} {
		status, e := do(c.method, c.path, c.body, c.header)
		require.Equal(t, c.status, status, "%s: %+v", c.name, e)
		require.Equal(t, c.status, e.Status, c.name)
		require.Contains(t, e.Error, c.want, c.name)
	}
	require.Nil(t, l.s.Status().Restore, "nothing was restored")
	require.Contains(t, l.log.String(), "API request refused")

	// What tools send, and what the API's own origin would, is answered.
	for _, c := range []struct {
		name         string
		method, path string
		header       map[string]string
	}{
		{"curl", http.MethodPost, "/v1/snapshots/full", nil},
		{"curl, localhost", http.MethodPost, "/v1/snapshots/delta", map[string]string{"Host": "localhost:" + port}},
		{"curl, [::1]", http.MethodGet, "/v1/status", map[string]string{"Host": "[::1]:" + port}},
		{"curl, an allowed name", http.MethodGet, "/v1/status", map[string]string{"Host": "etcd-0.example.com"}},
		{"curl, an allowed name and port", http.MethodGet, "/readyz", map[string]string{"Host": "proxy.example.com:8443"}},
		{"the API's own origin", http.MethodPost, "/v1/snapshots/delta",
			map[string]string{"Origin": "http://127.0.0.1:" + port, "Sec-Fetch-Site": "same-origin"}},
		{"a typed URL", http.MethodGet, "/v1/status", map[string]string{"Sec-Fetch-Site": "none"}},
		{"a read from another origin (the browser keeps the answer from the page)", http.MethodGet, "/v1/backups",
			map[string]string{"Origin": "http://evil.example"}},
	} {
		status, e := do(c.method, c.path, "", c.header)
		require.Equal(t, http.StatusOK, status, "%s: %+v", c.name, e)
	}

	// A restore as curl -H 'Content-Type: application/json; charset=utf-8' sends it, to the
	// newest point.
	var answer restoreAnswer
	req, err := http.NewRequest(http.MethodPost, l.url+"/v1/restore?wait=true", strings.NewReader("{}\n"))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&answer))
	require.Equal(t, http.StatusOK, resp.StatusCode, "%+v", answer)
	require.Equal(t, string(PhaseSucceeded), answer.Restore.Phase)
}
