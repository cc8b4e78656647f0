package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// member is the etcd member etcdbr runs for a test: its URLs, its store and the address of
// etcdbr's HTTP API. The URLs stay the same across etcdbr processes and data dirs, so that
// kube-apiserver, started once, reaches each of them.
type member struct {
	dir       string // the test's directory: data dirs, the store, logs
	store     string // file:// URL of the store
	clientURL string
	peerURL   string
	api       etcdbrAPI
}

// newMember places a member on free loopback ports, with its store in a temporary dir.
func newMember(t *testing.T) *member {
	dir := t.TempDir()
	return &member{
		dir:       dir,
		store:     "file://" + filepath.Join(dir, "store"),
		clientURL: fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
		peerURL:   fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
		api: etcdbrAPI{
			base:   fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
			client: &http.Client{Timeout: 3 * time.Minute},
		},
	}
}

// dataDir is the path of a data dir of the member's, by name.
func (m *member) dataDir(name string) string { return filepath.Join(m.dir, name) }

// etcdFlags are etcd's own flags for the member: the same for `etcdbr run` and `etcdbr
// restore`, so that a restore builds the same member (and cluster ID).
func (m *member) etcdFlags() []string {
	return []string{
		"--name=kube-e2e",
		"--listen-client-urls=" + m.clientURL,
		"--advertise-client-urls=" + m.clientURL,
		"--listen-peer-urls=" + m.peerURL,
		"--initial-advertise-peer-urls=" + m.peerURL,
		"--initial-cluster=kube-e2e=" + m.peerURL,
		"--log-level=warn",
	}
}

// run starts `etcdbr run` on dataDir with extra etcdbr flags and waits until it serves.
func (m *member) run(ctx context.Context, t *testing.T, dataDir string, extra ...string) *process {
	t.Helper()
	args := []string{"run", "--data-dir", dataDir, "--store", m.store, "--listen-api", m.api.addr()}
	args = append(append(append(args, extra...), "--"), m.etcdFlags()...)
	p := startProcess(t, m.dir, "etcdbr", etcdbrBin, args...)
	if err := m.waitServing(ctx, p, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitServing waits until etcdbr (the process p) says it serves and etcd answers a read.
func (m *member) waitServing(ctx context.Context, p *process, timeout time.Duration) error {
	cli, err := m.etcd()
	if err != nil {
		return err
	}
	defer cli.Close()
	_, err = poll(ctx, timeout, func(ctx context.Context) error {
		if done, err := p.exited(); done {
			return fmt.Errorf("etcdbr exited (%v) before serving", err)
		}
		var st status
		if err := m.api.get(ctx, "/v1/status", &st); err != nil {
			return err
		}
		if st.State != "serving" {
			return fmt.Errorf("etcdbr is %s", st.State)
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if _, err := cli.Get(rctx, "health"); err != nil {
			return fmt.Errorf("etcd does not answer: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("etcdbr did not come to serve: %w", err)
	}
	return nil
}

// etcd returns a client of the member; it reconnects across etcd restarts.
func (m *member) etcd() (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{m.clientURL},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client of %s: %w", m.clientURL, err)
	}
	return cli, nil
}

// storeNewest is the newest revision the member's store can restore, read with `etcdbr
// list` (so with etcdbr stopped, every revision etcd served: the final delta holds them).
func (m *member) storeNewest(ctx context.Context) (int64, error) {
	out, err := runToExit(ctx, etcdbrBin, "list", "--window-only", "--store", m.store)
	if err != nil {
		return 0, fmt.Errorf("%w: %s", err, out)
	}
	match := regexp.MustCompile(`restorable: revision \d+ \(.*\) to revision (\d+) `).FindStringSubmatch(out)
	if match == nil {
		return 0, fmt.Errorf("etcdbr list --window-only printed no restorable window: %s", out)
	}
	return strconv.ParseInt(match[1], 10, 64)
}

// etcdbrAPI is a client of etcdbr's HTTP API (docs/api.md).
type etcdbrAPI struct {
	base   string
	client *http.Client
}

// addr is the API's host:port, for --listen-api.
func (a etcdbrAPI) addr() string { return a.base[len("http://"):] }

// status is the part of GET /v1/status the tests read.
type status struct {
	State string `json:"state"`
	Etcd  struct {
		Revision int64    `json:"revision"`
		Alarms   []string `json:"alarms"`
	} `json:"etcd"`
	Restore *restoreStatus `json:"restore"`
}

// restoreStatus is a restore as /v1/status and POST /v1/restore describe it.
type restoreStatus struct {
	ID             int64      `json:"id"`
	Trigger        string     `json:"trigger"`
	Target         string     `json:"target"`
	Phase          string     `json:"phase"`
	Running        bool       `json:"running"`
	Error          string     `json:"error"`
	Started        time.Time  `json:"started"`
	Ended          *time.Time `json:"ended"`
	MemberRevision int64      `json:"member_revision"`
	StoreRevision  int64      `json:"store_revision"`
	Revision       int64      `json:"revision"`
	DataRevision   int64      `json:"data_revision"`
	RevisionBump   uint64     `json:"revision_bump"`
	Full           string     `json:"full"`
	Deltas         int        `json:"deltas"`
	FreshFull      string     `json:"fresh_full"`
}

// String is the restore in one line, for logs.
func (r restoreStatus) String() string {
	took := "still running"
	if r.Ended != nil {
		took = r.Ended.Sub(r.Started).Round(time.Millisecond).String()
	}
	return fmt.Sprintf("restore %d (%s, %s): %s in %s; revision %d restored from %s + %d deltas; "+
		"member revision %d, store revision %d before; data revision %d after (bump %d)%s",
		r.ID, r.Trigger, r.Target, r.Phase, took, r.Revision, r.Full, r.Deltas,
		r.MemberRevision, r.StoreRevision, r.DataRevision, r.RevisionBump, errorSuffix(r.Error))
}

func errorSuffix(msg string) string {
	if msg == "" {
		return ""
	}
	return "; error: " + msg
}

// get decodes the JSON answer of GET path into out; any status but 200 is an error.
func (a etcdbrAPI) get(ctx context.Context, path string, out any) error {
	code, err := a.do(ctx, http.MethodGet, path, nil, out)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("GET %s answered %d", path, code)
	}
	return err
}

// post sends body (JSON, unless nil) to path and decodes the answer into out; it returns
// the status code.
func (a etcdbrAPI) post(ctx context.Context, path string, body, out any) (int, error) {
	return a.do(ctx, http.MethodPost, path, body, out)
}

func (a etcdbrAPI) do(ctx context.Context, method, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return 0, fmt.Errorf("%s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s answered %d: %s: %w", method, path, resp.StatusCode, raw, err)
		}
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("%s %s answered %d: %s", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode, nil
}

// fullSnapshot takes a full snapshot now and returns its revision.
func (a etcdbrAPI) fullSnapshot(ctx context.Context) (int64, error) {
	var answer struct {
		Snapshot struct {
			Key      string `json:"key"`
			Revision int64  `json:"revision"`
		} `json:"snapshot"`
	}
	if _, err := a.post(ctx, "/v1/snapshots/full", nil, &answer); err != nil {
		return 0, err
	}
	return answer.Snapshot.Revision, nil
}

// restore asks for a restore to revision rev and waits until it ended; it returns the
// restore as /v1/status describes it at the end.
func (a etcdbrAPI) restore(ctx context.Context, rev int64) (restoreStatus, error) {
	var answer struct {
		Restore restoreStatus `json:"restore"`
	}
	if _, err := a.post(ctx, "/v1/restore", map[string]int64{"revision": rev}, &answer); err != nil {
		return restoreStatus{}, err
	}
	return a.waitRestore(ctx, func(r *restoreStatus) bool { return r.ID == answer.Restore.ID })
}

// waitRestore waits until /v1/status shows a restore that which selects as ended.
func (a etcdbrAPI) waitRestore(ctx context.Context, which func(*restoreStatus) bool) (restoreStatus, error) {
	var last restoreStatus
	_, err := poll(ctx, 3*time.Minute, func(ctx context.Context) error {
		var st status
		if err := a.get(ctx, "/v1/status", &st); err != nil {
			return err
		}
		switch {
		case st.Restore == nil || !which(st.Restore):
			return fmt.Errorf("no such restore yet")
		case st.Restore.Running:
			return fmt.Errorf("the restore is in phase %s", st.Restore.Phase)
		case st.State != "serving":
			return fmt.Errorf("the restore ended, etcdbr is %s", st.State)
		}
		last = *st.Restore
		return nil
	})
	if err != nil {
		return last, fmt.Errorf("wait for the restore: %w", err)
	}
	if last.Phase != "succeeded" {
		return last, fmt.Errorf("the restore failed: %s", last)
	}
	return last, nil
}
