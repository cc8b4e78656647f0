package testsuite

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etcdbr/etcdbr/internal/etcdtest"
)

// TestStatusCommand runs `etcdbr status` against a running `etcdbr run`: the summary shows
// what GET /v1/status and GET /v1/backups say, --json prints them raw, and once the member
// stopped the command names the address and exits 1.
func TestStatusCommand(t *testing.T) {
	dir := t.TempDir()
	m := newMember(t, dir)
	store := "file://" + filepath.Join(dir, "store")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := start(t, m.runArgs(store, "--full-snapshot-schedule", "@daily", "--delta-snapshot-period", "1s", "--listen-api", addr))
	a := newAPI(t, "http://"+addr)
	cli := client(t, m.ClientURL)
	waitFor(t, "readiness", time.Minute, func() bool { return a.call(http.MethodGet, "/readyz", "", nil) == http.StatusOK })
	rev, err := etcdtest.Workload{Seed: 41, Keys: 100, Overwrites: 20}.Run(context.Background(), cli)
	if err != nil {
		t.Fatal(err)
	}
	var delta struct {
		Deltas []apiObject `json:"deltas"`
	}
	if code := a.call(http.MethodPost, "/v1/snapshots/delta", "", &delta); code != http.StatusOK || len(delta.Deltas) == 0 {
		t.Fatalf("POST /v1/snapshots/delta: %d %+v", code, delta)
	}
	var st struct {
		Etcd struct {
			MemberID string `json:"member_id"`
		} `json:"etcd"`
		Backups struct {
			NewestFull    apiObject  `json:"newest_full"`
			UnbackedSince *time.Time `json:"unbacked_since"`
		} `json:"backups"`
		Ready []struct {
			Message string `json:"message"`
		} `json:"ready"`
	}
	// The supervisor samples etcd's revision: wait until it saw the last write and that the
	// store holds it.
	waitFor(t, "the status to show the store holding every write", time.Minute, func() bool {
		st.Backups.UnbackedSince = nil // absent from the answer when the store holds every write
		return a.call(http.MethodGet, "/v1/status", "", &st) == http.StatusOK && st.Backups.UnbackedSince == nil &&
			len(st.Ready) == 3 && strings.Contains(st.Ready[0].Message, fmt.Sprintf("revision %d", rev))
	})
	var backups struct {
		Window struct {
			Oldest, Newest struct {
				Revision int64 `json:"revision"`
			}
		} `json:"window"`
	}
	if code := a.call(http.MethodGet, "/v1/backups", "", &backups); code != http.StatusOK || backups.Window.Newest.Revision != rev {
		t.Fatalf("GET /v1/backups: %d %+v, want the window up to %d", code, backups, rev)
	}

	// The address from the environment, as an operator's shell would have it.
	code, out := runToExit(t, []string{"status"}, "ETCDBR_API=http://"+addr)
	if code != 0 {
		t.Fatalf("etcdbr status: exit %d\n%s", code, out)
	}
	t.Log(out)
	for _, want := range []string{
		fmt.Sprintf("member        %s (ID %s,", m.Name, st.Etcd.MemberID),
		fmt.Sprintf("leader, revision %d", rev),
		"health        ready",
		"ok   backup: ",
		fmt.Sprintf("RPO           0s: every write is in the store (revision %d)", rev),
		"store         " + store + ": reachable",
		"newest full   revision " + fmt.Sprint(st.Backups.NewestFull.Revision),
		st.Backups.NewestFull.Key,
		delta.Deltas[len(delta.Deltas)-1].Key,
		fmt.Sprintf("restorable: revision %d (", backups.Window.Oldest.Revision),
		fmt.Sprintf(") to revision %d (", rev),
		fmt.Sprintf("  restorable  %d-%d ", backups.Window.Oldest.Revision, rev),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("etcdbr status does not say %q", want)
		}
	}

	code, out = runToExit(t, []string{"status", "--api", "http://" + addr, "--json"})
	if code != 0 {
		t.Fatalf("etcdbr status --json: exit %d\n%s", code, out)
	}
	var raw struct {
		Status struct {
			State string `json:"state"`
			Etcd  struct {
				MemberID string `json:"member_id"`
				Revision int64  `json:"revision"`
			} `json:"etcd"`
		} `json:"status"`
		Backups struct {
			Full   []apiObject `json:"full"`
			Window struct {
				Newest struct {
					Revision int64 `json:"revision"`
				} `json:"newest"`
			} `json:"window"`
		} `json:"backups"`
	}
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatalf("etcdbr status --json is not one JSON document: %v\n%s", err, out)
	}
	if raw.Status.State != "serving" || raw.Status.Etcd.MemberID != st.Etcd.MemberID || raw.Status.Etcd.Revision != rev ||
		raw.Backups.Window.Newest.Revision != rev || len(raw.Backups.Full) == 0 {
		t.Fatalf("etcdbr status --json: %+v", raw)
	}

	p.stop()
	code, out = runToExit(t, []string{"status", "--api", "http://" + addr})
	if code != 1 || !strings.Contains(out, "no etcdbr API answers at http://"+addr+" (connection refused)") ||
		!strings.Contains(out, "is `etcdbr run` running") {
		t.Fatalf("etcdbr status of a stopped member: exit %d\n%s", code, out)
	}
}
