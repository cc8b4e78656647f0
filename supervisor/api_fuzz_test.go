package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// fuzzMember is the member FuzzAPIRequest's API serves: it answers every call and records
// the ones that change something.
type fuzzMember struct {
	mutated []string
	target  catalog.Target
}

func (m *fuzzMember) liveness() (State, int) { return StateServing, 1 }
func (m *fuzzMember) Readiness() []Check {
	return []Check{{Name: "etcd", OK: true}, {Name: "backup", OK: false, Message: "store unreachable"}}
}
func (m *fuzzMember) Status() Status { return Status{} }
func (m *fuzzMember) listStore(context.Context) ([]catalog.Snapshot, []catalog.Snapshot, error) {
	at := time.Date(2026, 11, 25, 15, 45, 0, 0, time.UTC)
	return []catalog.Snapshot{{Kind: catalog.KindFull, Revision: 10, Time: at, Key: catalog.FullName(10, at, false)}},
		[]catalog.Snapshot{{Kind: catalog.KindDelta, From: 11, Revision: 20, Time: at, Key: catalog.DeltaName(11, 20, at, false)}}, nil
}
func (m *fuzzMember) refresh(time.Time) (bool, bool) { return false, true }
func (m *fuzzMember) TakeFull(context.Context) (catalog.Snapshot, error) {
	m.mutated = append(m.mutated, "full")
	return catalog.Snapshot{Kind: catalog.KindFull, Revision: 21, Time: time.Now()}, nil
}
func (m *fuzzMember) FlushDeltas(context.Context) (backup.FlushResult, error) {
	m.mutated = append(m.mutated, "delta")
	return backup.FlushResult{}, nil
}
func (m *fuzzMember) RequestRestore(_ context.Context, target catalog.Target) (RestoreStatus, error) {
	m.mutated = append(m.mutated, "restore")
	m.target = target
	return RestoreStatus{ID: 1, Trigger: "request"}, nil
}
func (m *fuzzMember) RequestClusterRestore(_ context.Context, target catalog.Target, _ string) (catalog.Intent, error) {
	m.mutated = append(m.mutated, "cluster restore")
	m.target = target
	return catalog.Intent{Version: 1, ID: "fuzz"}, nil
}
func (m *fuzzMember) WaitRestore(context.Context, int64) (RestoreStatus, error) {
	return RestoreStatus{ID: 1, Trigger: "request", Phase: "done"}, nil
}

// The tokens of FuzzAPIRequest's API.
const fuzzToken, fuzzReadToken = "fuzz-token-0123456789-full", "fuzz-token-0123456789-read"

// FuzzAPIRequest sends arbitrary requests (method, target, header lines "Name: value", body)
// to the API as it serves on a non-loopback address with a full and a read-only token. No
// request panics; every error answer is an apiError with the answer's status (but /readyz's
// 503, its checks); nothing changes (a snapshot, a flush, a
// restore, a whole-cluster restore) but on a POST that carries the full token, and a restore
// asked for is exactly the target its body says; no answer holds a token. A restore body that parses also parses
// again, written back, to the same target.
func FuzzAPIRequest(f *testing.F) {
	f.Add("POST", "/v1/restore", "Authorization: Bearer "+fuzzToken+"\nContent-Type: application/json", []byte(`{"revision": 15}`))
	f.Add("POST", "/v1/restore?wait=true", "Authorization: Bearer "+fuzzToken+"\nContent-Type: application/json; charset=utf-8",
		[]byte(`{"time": "2026-11-25T15:04:05.5+01:00"}`))
	f.Add("POST", "/v1/restore", "Authorization: Bearer "+fuzzReadToken+"\nContent-Type: application/json", []byte(`{}`))
	f.Add("POST", "/v1/cluster-restore", "Authorization: Bearer "+fuzzToken+"\nContent-Type: application/json", []byte(`{"revision": 12}`))
	f.Add("POST", "/v1/snapshots/full", "Authorization: bearer "+fuzzToken, []byte{})
	f.Add("POST", "/v1/snapshots/delta", "Authorization: Bearer "+fuzzToken+"\nOrigin: http://evil.example", []byte{})
	f.Add("GET", "/readyz?exclude=backup", "", []byte{})
	f.Add("GET", "/v1/backups", "Authorization: Bearer "+fuzzReadToken, []byte{})
	f.Add("HEAD", "/v1/status", "Authorization: Bearer "+fuzzToken, []byte{})
	f.Add("GET", "/metrics", "Authorization: Bearer "+fuzzReadToken, []byte{})
	f.Add("GET", "/", "Authorization: Bearer "+fuzzReadToken, []byte{})
	f.Add("DELETE", "/healthz", "", []byte{})
	f.Add("POST", "/v1/restore", "Authorization: Bearer "+fuzzToken+"\nContent-Type: application/json", []byte(`{"revision": 1, "time": "x"} {}`))

	dir := f.TempDir()
	store, err := snapstore.Open(context.Background(), "mem://fuzz", snapstore.Options{})
	if err != nil {
		f.Fatal(err)
	}
	defer store.Close()
	cfg := APIConfig{Listen: "192.0.2.1:2378", TokenFile: filepath.Join(dir, "token"), ReadOnlyTokenFile: filepath.Join(dir, "read")}
	for path, token := range map[string]string{cfg.TokenFile: fuzzToken, cfg.ReadOnlyTokenFile: fuzzReadToken} {
		if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
			f.Fatal(err)
		}
	}
	auth, err := loadAPIAuth(cfg)
	if err != nil {
		f.Fatal(err)
	}
	hosts, err := newHostGuard(cfg, cfg.Listen)
	if err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, method, target, headers string, body []byte) {
		if len(body) > 0 {
			checkRestoreBodyRoundTrip(t, body)
		}
		r, err := http.NewRequest(method, "http://192.0.2.1:2378"+target, bytes.NewReader(body))
		if err != nil || r.URL.Host != "192.0.2.1:2378" {
			return
		}
		for _, line := range strings.Split(headers, "\n") {
			if name, value, ok := strings.Cut(line, ":"); ok {
				r.Header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
			}
		}
		r.RemoteAddr = "192.0.2.2:40000"
		m := &fuzzMember{}
		a := &apiServer{member: m, store: store, gatherer: prometheus.NewRegistry(), lg: slog.New(slog.DiscardHandler)}
		w := httptest.NewRecorder()
		a.guardHost(hosts, a.handler(auth)).ServeHTTP(w, r)

		res := w.Result()
		out := w.Body.Bytes()
		if bytes.Contains(out, []byte(fuzzToken)) || bytes.Contains(out, []byte(fuzzReadToken)) {
			t.Fatalf("the answer holds a token: %s", out)
		}
		var ready readyAnswer
		if res.StatusCode == http.StatusServiceUnavailable && json.Unmarshal(out, &ready) == nil && ready.Checks != nil {
			// /readyz answers a failing check with its checks, as on success.
			if ready.Ready || ready.Failed == "" {
				t.Fatalf("not ready, but the answer says %q", out)
			}
		} else if res.StatusCode >= 400 {
			var e apiError
			if err := json.Unmarshal(out, &e); err != nil || e.Status != res.StatusCode || e.Error == "" {
				t.Fatalf("error answer %d is not an apiError with its status: %q (%v)", res.StatusCode, out, err)
			}
		}
		if len(m.mutated) == 0 {
			return
		}
		if r.Method != http.MethodPost || len(m.mutated) != 1 || !hasToken(r, fuzzToken) {
			t.Fatalf("%s %s with headers %q changed %v", method, target, headers, m.mutated)
		}
		if m.mutated[0] == "restore" || m.mutated[0] == "cluster restore" {
			want, err := parseRestoreBody(body)
			if err != nil || !want.Time.Equal(m.target.Time) || want.Revision != m.target.Revision {
				t.Fatalf("a restore to %+v from the body %q (which parses to %+v, %v)", m.target, body, want, err)
			}
		}
	})
}

// hasToken reports whether r carries token as its bearer token.
func hasToken(r *http.Request, token string) bool {
	for _, h := range r.Header.Values("Authorization") {
		if scheme, value, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "bearer") && strings.TrimSpace(value) == token {
			return true
		}
	}
	return false
}

// checkRestoreBodyRoundTrip: a restore body that parses parses again, written back as JSON,
// to the same target.
func checkRestoreBodyRoundTrip(t *testing.T, body []byte) {
	target, err := parseRestoreBody(body)
	if err != nil {
		return
	}
	if err := target.Validate(); err != nil {
		t.Fatalf("the body %q parses to %+v, which fails Validate: %v", body, target, err)
	}
	req := map[string]any{}
	if target.Revision != 0 {
		req["revision"] = target.Revision
	}
	if !target.Time.IsZero() {
		req["time"] = target.Time.Format(time.RFC3339Nano)
	}
	again, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	back, err := parseRestoreBody(again)
	if err != nil || back.Revision != target.Revision || !back.Time.Equal(target.Time) {
		t.Fatalf("the body %q parses to %+v; written back as %s it parses to %+v, %v", body, target, again, back, err)
	}
}
