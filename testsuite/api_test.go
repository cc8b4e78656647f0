package testsuite

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/internal/etcdtest"
	"github.com/etcdbr/etcdbr/internal/storetest"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// api is a client of an etcdbr's HTTP API.
type api struct {
	t      testing.TB
	base   string
	client *http.Client
	token  string // sent as a bearer token when set
}

func newAPI(t testing.TB, base string) *api {
	return &api{t: t, base: base, client: &http.Client{Timeout: 3 * time.Minute}}
}

// call makes a request as curl --json does (a POST declares a JSON body) and decodes the
// JSON answer into out (unless nil); it returns the status code.
func (a *api) call(method, path, body string, out any) int {
	a.t.Helper()
	var header map[string]string
	if method == http.MethodPost {
		header = map[string]string{"Content-Type": "application/json"}
	}
	return a.callWith(header, method, path, body, out)
}

// callWith is call with the request headers given in header ("Host" sets the Host header).
func (a *api) callWith(header map[string]string, method, path, body string, out any) int {
	a.t.Helper()
	req, err := http.NewRequest(method, a.base+path, strings.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	for k, v := range header {
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := a.client.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); path != "/metrics" && ct != "application/json" {
		a.t.Fatalf("%s %s answered %s, not JSON: %s", method, path, ct, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			a.t.Fatalf("%s %s answered %d: %s: %v", method, path, resp.StatusCode, raw, err)
		}
	}
	return resp.StatusCode
}

// waitFor polls cond until it holds, or fails the test after timeout.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// The JSON of the API, as much as the tests read.
type (
	apiErr struct {
		Status int    `json:"status"`
		Error  string `json:"error"`
	}
	apiObject struct {
		Kind     string    `json:"kind"`
		Key      string    `json:"key"`
		From     int64     `json:"from"`
		Revision int64     `json:"revision"`
		Time     time.Time `json:"time"`
		Size     int64     `json:"size"`
	}
	apiRestore struct {
		ID           int64  `json:"id"`
		Phase        string `json:"phase"`
		Running      bool   `json:"running"`
		Error        string `json:"error"`
		Revision     int64  `json:"revision"`
		DataRevision int64  `json:"data_revision"`
		RevisionBump uint64 `json:"revision_bump"`
		FreshFull    string `json:"fresh_full"`
		MovedAside   string `json:"moved_aside"`
	}
	apiStatus struct {
		State string `json:"state"`
		PID   int    `json:"pid"`
		Etcd  struct {
			Revision int64 `json:"revision"`
			IsLeader bool  `json:"is_leader"`
		} `json:"etcd"`
		Backups struct {
			StoreReachable   *bool      `json:"store_reachable"`
			NewestFull       *apiObject `json:"newest_full"`
			BackedUpRevision int64      `json:"backed_up_revision"`
		} `json:"backups"`
		Restore *apiRestore `json:"restore"`
	}
	apiReady struct {
		Ready  bool   `json:"ready"`
		Failed string `json:"failed"`
	}
	apiBackups struct {
		Full   []apiObject `json:"full"`
		Delta  []apiObject `json:"delta"`
		Window struct {
			Newest *struct {
				Revision int64 `json:"revision"`
			} `json:"newest"`
			Gaps []any `json:"gaps"`
		} `json:"window"`
	}
)

// TestAPIRestoreInPlace drives a running `etcdbr run` through its API: health, readiness,
// status, a full and a delta snapshot on request, the listing, method and path errors; then
// a restore to a past revision, after which the same process (same PID, never exited)
// serves exactly that revision's data, and the store holds a fresh full snapshot of it.
func TestAPIRestoreInPlace(t *testing.T) {
	dir := t.TempDir()
	m := newMember(t, dir)
	store := "file://" + filepath.Join(dir, "store")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := start(t, m.runArgs(store, "--full-snapshot-schedule", "@daily", "--delta-snapshot-period", "1s", "--listen-api", addr),
		"ETCDBR_API_ALLOWED_HOSTS=etcd-0.test,proxy.test:8443")
	a := newAPI(t, "http://"+addr)
	cli := client(t, m.ClientURL)
	ctx := context.Background()
	pid := p.cmd.Process.Pid

	var health struct {
		Status string `json:"status"`
		PID    int    `json:"pid"`
	}
	if code := a.call(http.MethodGet, "/healthz", "", &health); code != http.StatusOK || health.PID != pid {
		t.Fatalf("/healthz: %d %+v, want 200 and pid %d", code, health, pid)
	}
	waitFor(t, "readiness", time.Minute, func() bool { return a.call(http.MethodGet, "/readyz", "", nil) == http.StatusOK })

	if _, err := (etcdtest.Workload{Seed: 11, Keys: 400, Overwrites: 100, Deletes: 40, LeasedKeys: 20}).Run(ctx, cli); err != nil {
		t.Fatal(err)
	}
	atA, err := etcdtest.Take(ctx, cli, 0)
	if err != nil {
		t.Fatal(err)
	}
	revB, err := etcdtest.Workload{Seed: 12, Keys: 300, Overwrites: 150, Deletes: 60}.Run(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}

	var delta struct {
		Revision int64       `json:"revision"`
		Deltas   []apiObject `json:"deltas"`
	}
	if code := a.call(http.MethodPost, "/v1/snapshots/delta", "", &delta); code != http.StatusOK || delta.Revision != revB ||
		len(delta.Deltas) == 0 || delta.Deltas[len(delta.Deltas)-1].Revision != revB {
		t.Fatalf("POST /v1/snapshots/delta: %d %+v, want the deltas up to revision %d", code, delta, revB)
	}
	var full struct {
		Snapshot apiObject `json:"snapshot"`
	}
	if code := a.call(http.MethodPost, "/v1/snapshots/full", "", &full); code != http.StatusOK || full.Snapshot.Revision != revB {
		t.Fatalf("POST /v1/snapshots/full: %d %+v, want a full snapshot at revision %d", code, full, revB)
	}
	listed := fulls(t, store)
	if last := listed[len(listed)-1]; last.Key != full.Snapshot.Key || last.Size != full.Snapshot.Size {
		t.Fatalf("the store's newest full snapshot is %+v, the API answered %+v", last, full.Snapshot)
	}
	var backups apiBackups
	if code := a.call(http.MethodGet, "/v1/backups", "", &backups); code != http.StatusOK {
		t.Fatalf("GET /v1/backups: %d", code)
	}
	if len(backups.Full) != len(listed) || len(backups.Delta) != len(deltas(t, store)) ||
		backups.Window.Newest == nil || backups.Window.Newest.Revision != revB || len(backups.Window.Gaps) != 0 {
		t.Fatalf("GET /v1/backups: %+v, want every object and the window up to %d without gaps", backups, revB)
	}
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/v1/restore", http.StatusMethodNotAllowed},
		{http.MethodPut, "/v1/snapshots/full", http.StatusMethodNotAllowed},
		{http.MethodPost, "/v1/backups", http.StatusMethodNotAllowed},
		{http.MethodGet, "/v2/status", http.StatusNotFound},
	} {
		var e apiErr
		if code := a.call(c.method, c.path, "", &e); code != c.status || e.Status != c.status || e.Error == "" {
			t.Fatalf("%s %s: %d %+v, want %d with a JSON error", c.method, c.path, code, e, c.status)
		}
	}

	// A web page cannot drive it (docs/api.md#browsers); the names of ETCDBR_API_ALLOWED_HOSTS
	// are answered besides loopback.
	_, port, _ := net.SplitHostPort(addr)
	restoreA := fmt.Sprintf(`{"revision": %d}`, atA.Revision)
	for _, c := range []struct {
		name         string
		header       map[string]string
		method, path string
		body         string
		status       int
		want         string
	}{
		{"a form of another site", map[string]string{"Origin": "http://evil.example", "Content-Type": "text/plain"},
			http.MethodPost, "/v1/restore", restoreA, http.StatusForbidden, "Origin: http://evil.example"},
		{"an empty restore from another site", map[string]string{"Origin": "http://evil.example"},
			http.MethodPost, "/v1/restore", "", http.StatusForbidden, "another origin"},
		{"a cross-site fetch", map[string]string{"Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"},
			http.MethodPost, "/v1/snapshots/full", "", http.StatusForbidden, "Sec-Fetch-Site: cross-site"},
		{"DNS rebinding", map[string]string{"Host": "rebound.evil.example:" + port, "Content-Type": "application/json"},
			http.MethodPost, "/v1/restore", restoreA, http.StatusForbidden, "--api-allowed-hosts"},
		{"a name that is not allowed", map[string]string{"Host": "proxy.test:443"},
			http.MethodGet, "/v1/status", "", http.StatusForbidden, "proxy.test:8443"},
		{"no JSON Content-Type", nil, http.MethodPost, "/v1/restore", restoreA, http.StatusUnsupportedMediaType, "Content-Type: application/json"},
		{"data after the JSON", map[string]string{"Content-Type": "application/json"},
			http.MethodPost, "/v1/restore", restoreA + " xyz", http.StatusBadRequest, "more after its JSON object"},
		{"an empty body", map[string]string{"Content-Type": "application/json"},
			http.MethodPost, "/v1/restore", "", http.StatusBadRequest, "the body is empty"},
		{"revision 0", map[string]string{"Content-Type": "application/json"},
			http.MethodPost, "/v1/restore", `{"revision": 0}`, http.StatusBadRequest, "revisions start at 1; send {} for the newest point"},
		{"an allowed name", map[string]string{"Host": "etcd-0.test"}, http.MethodGet, "/healthz", "", http.StatusOK, "alive"},
		{"an allowed name and port", map[string]string{"Host": "proxy.test:8443"}, http.MethodGet, "/healthz", "", http.StatusOK, "alive"},
		{"localhost", map[string]string{"Host": "localhost:" + port}, http.MethodGet, "/healthz", "", http.StatusOK, "alive"},
	} {
		var e map[string]any
		if code := a.callWith(c.header, c.method, c.path, c.body, &e); code != c.status || !strings.Contains(fmt.Sprint(e), c.want) {
			t.Fatalf("%s: %s %s answered %d %v, want %d and %q", c.name, c.method, c.path, code, e, c.status, c.want)
		}
	}

	var accepted struct {
		Restore apiRestore `json:"restore"`
	}
	if code := a.call(http.MethodPost, "/v1/restore", restoreA, &accepted); code != http.StatusAccepted {
		t.Fatalf("POST /v1/restore: %d %+v", code, accepted)
	}
	var st apiStatus
	waitFor(t, "the restore to end", 2*time.Minute, func() bool {
		a.call(http.MethodGet, "/v1/status", "", &st)
		return st.Restore != nil && st.Restore.ID == accepted.Restore.ID && !st.Restore.Running
	})
	r := st.Restore
	// A new history, past the newest revision served (revB), compacted there.
	newStart := revB + catalog.BumpMargin
	if r.Phase != "succeeded" || r.Revision != atA.Revision || r.DataRevision != newStart || r.RevisionBump != uint64(newStart-atA.Revision) {
		t.Fatalf("restore: %+v, want revision %d restored into a data dir at revision %d", r, atA.Revision, newStart)
	}
	select {
	case <-p.done:
		t.Fatalf("etcdbr exited during the restore: %v", p.err)
	default:
	}
	if st.PID != pid || st.State != "serving" {
		t.Fatalf("status after the restore: pid %d state %s, want pid %d serving", st.PID, st.State, pid)
	}
	waitServing(t, cli, m.ClientURL)
	got, err := etcdtest.Take(ctx, cli, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got.Revision != newStart {
		t.Fatalf("the restored member is at revision %d, want %d", got.Revision, newStart)
	}
	atA.Revision = got.Revision
	if diff := etcdtest.Diff(atA, got, 20); len(diff) > 0 {
		t.Fatalf("the restored member does not hold revision %d's data:\n%s", r.Revision, strings.Join(diff, "\n"))
	}
	fresh := waitFull(t, store, newStart, time.Minute)
	if fresh.Key != r.FreshFull || fresh.Revision != newStart {
		t.Fatalf("the store's newest full snapshot is %+v, want %s at revision %d", fresh, r.FreshFull, newStart)
	}
	if _, err := os.Stat(r.MovedAside); err != nil {
		t.Fatalf("the replaced data dir is not kept: %v", err)
	}
	p.stop()

	// list, verify --deep and a restore of the newest point agree after the live restore:
	// the two histories with the jump between them, no gap, and the restored data.
	code, out := runToExit(t, []string{"list", "--store", store, "--objects"})
	if code != 0 || !strings.Contains(out, fmt.Sprintf("went back to revision %d and started a new history at revision %d", r.Revision, newStart)) ||
		strings.Contains(out, "0001-01-01") ||
		strings.Contains(out, "gap:") || strings.Contains(out, "pruned:") {
		t.Fatalf("etcdbr list after the live restore: exit %d\n%s", code, out)
	}
	if code, out := runToExit(t, []string{"verify", "--store", store, "--deep"}); code != 0 {
		t.Fatalf("etcdbr verify --deep after the live restore: exit %d\n%s", code, out)
	}
	r2 := newMember(t, t.TempDir())
	code, out = runToExit(t, append([]string{"restore", "--data-dir", r2.DataDir, "--store", store, "--keep-store-cluster", "--"}, r2.etcdFlags()...))
	if code != 0 {
		t.Fatalf("etcdbr restore of the newest point after the live restore: exit %d\n%s", code, out)
	}
	p2 := start(t, r2.runArgs("file://"+filepath.Join(t.TempDir(), "other"), "--full-snapshot-schedule", "@daily"))
	defer p2.stop()
	sameData(t, atA, takeDump(t, r2), newStart+catalog.DefaultUnbackedRevisions+catalog.BumpMargin, "the newest point after the live restore")
}

// TestAPIAuthNonLoopback: on an address that is not loopback etcdbr refuses to start
// without TLS and a credential; with them, health is open, GETs take any credential
// (the read-only token too), POSTs the full token or a client certificate, and no
// credential appears in the log.
func TestAPIAuthNonLoopback(t *testing.T) {
	dir := t.TempDir()
	store := "file://" + filepath.Join(dir, "store")
	m := newMember(t, dir)
	port := freePort(t)
	code, out := runToExit(t, m.runArgs(store, "--listen-api", fmt.Sprintf("0.0.0.0:%d", port)))
	if code != 2 || !strings.Contains(out, "must use TLS") {
		t.Fatalf("exit %d, want 2 and a message that TLS is required:\n%s", code, out)
	}

	pki := embeddedtest.NewPKI(t)
	token, readToken := randomHex(t, 24), randomHex(t, 24)
	tokenFile, readFile := filepath.Join(dir, "token"), filepath.Join(dir, "read-token")
	for f, tok := range map[string]string{tokenFile: token, readFile: readToken} {
		if err := os.WriteFile(f, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p := start(t, m.runArgs(store, "--full-snapshot-schedule", "@daily",
		"--listen-api", fmt.Sprintf("0.0.0.0:%d", port), "--api-cert", pki.ServerCert, "--api-key", pki.ServerKey,
		"--api-client-ca", pki.CA, "--api-token-file", tokenFile, "--api-read-only-token-file", readFile))
	p.waitLine("HTTP API listening", time.Minute)
	client(t, m.ClientURL)

	caPEM, err := os.ReadFile(pki.CA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	httpsClient := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Timeout: time.Minute, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs, MinVersion: tls.VersionTLS12}}}
	}
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	anon := &api{t: t, base: base, client: httpsClient()}
	withToken := &api{t: t, base: base, client: httpsClient(), token: token}
	readOnly := &api{t: t, base: base, client: httpsClient(), token: readToken}
	wrong := &api{t: t, base: base, client: httpsClient(), token: readToken + token}
	clientCert, err := tls.LoadX509KeyPair(pki.ClientCert, pki.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	withCert := &api{t: t, base: base, client: httpsClient(clientCert)}
	waitFor(t, "readiness", time.Minute, func() bool { return anon.call(http.MethodGet, "/readyz", "", nil) == http.StatusOK })

	for _, c := range []struct {
		name         string
		a            *api
		method, path string
		status       int
	}{
		{"health without credential", anon, http.MethodGet, "/healthz", http.StatusOK},
		{"status without credential", anon, http.MethodGet, "/v1/status", http.StatusUnauthorized},
		{"metrics without credential", anon, http.MethodGet, "/metrics", http.StatusUnauthorized},
		{"snapshot without credential", anon, http.MethodPost, "/v1/snapshots/full", http.StatusUnauthorized},
		{"restore without credential", anon, http.MethodPost, "/v1/restore", http.StatusUnauthorized},
		{"status with a wrong token", wrong, http.MethodGet, "/v1/status", http.StatusUnauthorized},
		{"status with the read-only token", readOnly, http.MethodGet, "/v1/status", http.StatusOK},
		{"snapshot with the read-only token", readOnly, http.MethodPost, "/v1/snapshots/full", http.StatusForbidden},
		{"snapshot with the token", withToken, http.MethodPost, "/v1/snapshots/full", http.StatusOK},
		{"snapshot with a client certificate", withCert, http.MethodPost, "/v1/snapshots/full", http.StatusOK},
		{"backups with a client certificate", withCert, http.MethodGet, "/v1/backups", http.StatusOK},
	} {
		var out any
		if code := c.a.call(c.method, c.path, "", &out); code != c.status {
			t.Fatalf("%s: %s %s answered %d %v, want %d", c.name, c.method, c.path, code, out, c.status)
		}
	}
	// The status page needs what the GET endpoints need.
	for _, c := range []struct {
		name   string
		a      *api
		status int
		ctype  string
	}{
		{"the status page without credential", anon, http.StatusUnauthorized, "application/json"},
		{"the status page with the read-only token", readOnly, http.StatusOK, "text/html; charset=utf-8"},
		{"the status page with a client certificate", withCert, http.StatusOK, "text/html; charset=utf-8"},
	} {
		req, err := http.NewRequest(http.MethodGet, base+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		if c.a.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.a.token)
		}
		resp, err := c.a.client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.status || resp.Header.Get("Content-Type") != c.ctype {
			t.Fatalf("%s: GET / answered %s %s, want %d %s", c.name, resp.Status, resp.Header.Get("Content-Type"), c.status, c.ctype)
		}
	}
	// The TLS listener answers plain HTTP with 400 (Go's "HTTP request to an HTTPS server").
	if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", port)); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain HTTP on the TLS listener: %s", resp.Status)
		}
	}
	p.stop()
	if out := p.Output(); strings.Contains(out, token) || strings.Contains(out, readToken) {
		t.Fatalf("a token is in the log:\n%s", out)
	}
}

// documentedMetrics returns the metric names docs/metrics.md documents.
func documentedMetrics(t testing.TB) []string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	re := regexp.MustCompile("^\\| `(etcdbr_[a-z_]+)`")
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			names = append(names, m[1])
		}
	}
	if len(names) < 10 {
		t.Fatalf("docs/metrics.md documents %d metrics", len(names))
	}
	return names
}

// scrape reads /metrics.
func scrape(t testing.TB, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return families
}

// value returns the value of the series of family name whose labels include labels.
func value(t testing.TB, families map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f, ok := families[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

// TestMetricsScrape: /metrics serves etcd's metrics and every etcdbr metric docs/metrics.md
// documents (and no undocumented one), and they move: the revision with writes, the
// snapshot counters with snapshots, the delta events with the events uploaded.
func TestMetricsScrape(t *testing.T) {
	dir := t.TempDir()
	m := newMember(t, dir)
	store := "file://" + filepath.Join(dir, "store")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := start(t, m.runArgs(store, "--full-snapshot-schedule", "@daily", "--delta-snapshot-period", "1s", "--listen-api", addr))
	base := "http://" + addr
	a := newAPI(t, base)
	cli := client(t, m.ClientURL)
	waitFor(t, "readiness", time.Minute, func() bool { return a.call(http.MethodGet, "/readyz", "", nil) == http.StatusOK })

	before := scrape(t, base)
	documented := documentedMetrics(t)
	for _, name := range documented {
		if _, ok := before[name]; !ok {
			t.Errorf("documented metric %s is not served", name)
		}
	}
	for name := range before {
		if strings.HasPrefix(name, "etcdbr_") && !contains(documented, name) {
			t.Errorf("metric %s is not documented in docs/metrics.md", name)
		}
	}
	for _, name := range []string{"etcd_server_has_leader", "etcd_mvcc_db_total_size_in_bytes", "go_goroutines"} {
		if _, ok := before[name]; !ok {
			t.Errorf("etcd's metric %s is not served", name)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	if value(t, before, "etcdbr_state", "state", "serving") != 1 || value(t, before, "etcdbr_ready", "check", "backup") != 1 {
		t.Fatal("etcdbr_state or etcdbr_ready do not say serving and ready")
	}

	ctx := context.Background()
	rev0 := value(t, before, "etcdbr_etcd_revision")
	const writes = 25
	for i := range writes {
		if _, err := cli.Put(ctx, fmt.Sprintf("/metrics/%d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	var after map[string]*dto.MetricFamily
	waitFor(t, "etcdbr_etcd_revision to follow the writes", time.Minute, func() bool {
		after = scrape(t, base)
		return value(t, after, "etcdbr_etcd_revision") == rev0+writes
	})
	fulls0 := value(t, after, "etcdbr_snapshots_total", "kind", "full")
	durations0 := value(t, after, "etcdbr_snapshot_duration_seconds", "kind", "full")
	var full struct {
		Snapshot apiObject `json:"snapshot"`
	}
	if code := a.call(http.MethodPost, "/v1/snapshots/full", "", &full); code != http.StatusOK {
		t.Fatalf("POST /v1/snapshots/full: %d", code)
	}
	waitStoreRevision(t, store, int64(rev0)+writes, time.Minute)
	after = scrape(t, base)
	if got := value(t, after, "etcdbr_snapshots_total", "kind", "full"); got != fulls0+1 {
		t.Fatalf("etcdbr_snapshots_total{kind=full} went from %v to %v after one snapshot", fulls0, got)
	}
	if got := value(t, after, "etcdbr_snapshot_duration_seconds", "kind", "full"); got != durations0+1 {
		t.Fatalf("etcdbr_snapshot_duration_seconds{kind=full} counts %v, want %v", got, durations0+1)
	}
	if got := value(t, after, "etcdbr_snapshot_last_size_bytes", "kind", "full"); got != float64(full.Snapshot.Size) {
		t.Fatalf("etcdbr_snapshot_last_size_bytes{kind=full} is %v, the snapshot has %d bytes", got, full.Snapshot.Size)
	}
	if got := value(t, after, "etcdbr_newest_snapshot_revision", "kind", "full"); got != rev0+writes {
		t.Fatalf("etcdbr_newest_snapshot_revision{kind=full} is %v, want %v", got, rev0+writes)
	}
	events0 := value(t, before, "etcdbr_delta_events_total")
	waitFor(t, "etcdbr_delta_events_total to count the writes", time.Minute, func() bool {
		got := value(t, scrape(t, base), "etcdbr_delta_events_total")
		if got > events0+writes {
			t.Fatalf("etcdbr_delta_events_total went from %v to %v with %d writes", events0, got, writes)
		}
		return got == events0+writes
	})
	waitFor(t, "etcdbr_delta_lag_revisions to reach 0", time.Minute, func() bool {
		return value(t, scrape(t, base), "etcdbr_delta_lag_revisions") == 0
	})
	p.stop()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// storeReachable reads the status's view of the store.
func storeReachable(t testing.TB, a *api) (known, reachable bool) {
	t.Helper()
	var st apiStatus
	a.call(http.MethodGet, "/v1/status", "", &st)
	if st.Backups.StoreReachable == nil {
		return false, false
	}
	return true, *st.Backups.StoreReachable
}

// putLoop writes keys until stopped and counts the writes that failed.
type putLoop struct {
	stop   chan struct{}
	done   chan struct{}
	ok     int
	failed []error
	last   int64
}

func startPutLoop(cli *clientv3.Client, prefix string) *putLoop {
	l := &putLoop{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			resp, err := cli.Put(ctx, fmt.Sprintf("%s/%d", prefix, i%500), fmt.Sprintf("value %d", i))
			cancel()
			if err != nil {
				l.failed = append(l.failed, err)
				continue
			}
			l.ok++
			l.last = resp.Header.Revision
		}
	}()
	return l
}

func (l *putLoop) halt() {
	close(l.stop)
	<-l.done
}

// TestStoreOutage stops the object-storage server for 30 seconds while writes go on: etcd
// keeps taking every write, readiness reports the stale backup and the status the
// unreachable store; once the server is back, the backups catch up with no gap in the
// delta chain and the deltas hold exactly the member's history.
func TestStoreOutage(t *testing.T) {
	srv := startStoppableS3(t)
	srv.setEnv(t)
	dir := t.TempDir()
	m := newMember(t, dir)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := start(t, m.runArgs(srv.url, "--full-snapshot-schedule", "@daily", "--delta-snapshot-period", "1s",
		"--max-backup-age", "10s", "--listen-api", addr))
	a := newAPI(t, "http://"+addr)
	cli := client(t, m.ClientURL)
	waitFor(t, "readiness", time.Minute, func() bool { return a.call(http.MethodGet, "/readyz", "", nil) == http.StatusOK })

	writes := startPutLoop(cli, "/outage")
	defer func() {
		select {
		case <-writes.done:
		default:
			writes.halt()
		}
	}()
	waitFor(t, "a delta in the store", time.Minute, func() bool { return len(deltas(t, srv.url)) > 0 })

	srv.stop()
	outage := time.Now()
	okBefore := writes.ok
	var ready apiReady
	waitFor(t, "readiness to report the stale backup", time.Minute, func() bool {
		return a.call(http.MethodGet, "/readyz", "", &ready) == http.StatusServiceUnavailable
	})
	staleAfter := time.Since(outage)
	if !strings.Contains(ready.Failed, "backup:") || strings.Contains(ready.Failed, "etcd:") {
		t.Fatalf("readiness during the outage: %+v, want only the backup check failed", ready)
	}
	waitFor(t, "the status to report the store unreachable", time.Minute, func() bool {
		known, reachable := storeReachable(t, a)
		return known && !reachable
	})
	if wait := 30*time.Second - time.Since(outage); wait > 0 {
		time.Sleep(wait)
	}
	okDuringOutage := writes.ok - okBefore
	srv.restart()
	back := time.Now()

	waitFor(t, "readiness after the outage", 3*time.Minute, func() bool {
		return a.call(http.MethodGet, "/readyz", "", nil) == http.StatusOK
	})
	t.Logf("%d writes acknowledged during the %v outage; readiness failed %v after it began and passed again %v after the server returned",
		okDuringOutage, back.Sub(outage).Round(time.Second), staleAfter.Round(100*time.Millisecond), time.Since(back).Round(100*time.Millisecond))
	writes.halt()
	if len(writes.failed) > 0 {
		t.Fatalf("%d writes failed (etcd must keep serving), the first: %v", len(writes.failed), writes.failed[0])
	}
	if okDuringOutage < 100 {
		t.Fatalf("only %d writes before the store came back", okDuringOutage)
	}
	waitStoreRevision(t, srv.url, writes.last, 3*time.Minute)
	checkDeltaContent(t, srv.url, cli, checkChain(t, srv.url))
	known, reachable := storeReachable(t, a)
	if !known || !reachable {
		t.Fatal("the status does not say the store is reachable again")
	}
	p.stop()
}

// stoppableS3 is an S3 server the test can stop and start again on the same port, with
// the same data.
type stoppableS3 struct {
	url           string   // the store URL
	env           []string // the credentials etcdbr needs
	stop, restart func()
}

// setEnv sets the server's credentials in the test's environment, for this process's own
// listings; the binaries the test starts inherit them.
func (s *stoppableS3) setEnv(t *testing.T) {
	for _, kv := range s.env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// startStoppableS3 starts a MinIO server of its own when scripts/test-services announced
// the binaries (always so under `make test`), otherwise an in-process gofakes3 server.
func startStoppableS3(t *testing.T) *stoppableS3 {
	t.Helper()
	ctx := context.Background()
	if bins, ok := storetest.BinariesFromEnv(); ok {
		server, err := storetest.Start(ctx, storetest.S3, bins, filepath.Join(t.TempDir(), "minio"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(server.Kill)
		svc := storetest.ServiceOf(server)
		bucket := storetest.NewBucketName()
		if err := svc.CreateBucket(ctx, bucket); err != nil {
			t.Fatal(err)
		}
		return &stoppableS3{url: svc.URL(bucket, "outage"), env: svc.ProviderEnv(), stop: server.Stop, restart: func() {
			if err := server.Restart(ctx); err != nil {
				t.Fatal(err)
			}
		}}
	}
	if storetest.Required() {
		t.Fatal("the MinIO binary is not announced: " + storetest.MissingHelp)
	}
	t.Log("MinIO is not available: using an in-process S3 server (gofakes3)")
	backend := s3mem.New()
	if err := backend.CreateBucket("backups"); err != nil {
		t.Fatal(err)
	}
	handler := gofakes3.New(backend).Server()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	serve := func(ln net.Listener) *http.Server {
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln) //nolint:errcheck // ends with Close
		return srv
	}
	cur := serve(ln)
	t.Cleanup(func() { cur.Close() })
	s := &stoppableS3{
		url: "s3://backups/outage?region=us-east-1&use_path_style=true&response_checksum_validation=when_required&endpoint=" +
			url.QueryEscape("http://"+addr),
		env: []string{"AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test", "AWS_CONFIG_FILE=/dev/null",
			"AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true"},
	}
	s.stop = func() { cur.Close() } // the listener and every connection, like a crash
	s.restart = func() {
		var ln net.Listener
		waitFor(t, "the S3 server's port to be free again", time.Minute, func() bool {
			ln, err = net.Listen("tcp", addr)
			return err == nil
		})
		cur = serve(ln)
	}
	return s
}
