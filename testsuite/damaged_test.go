package testsuite

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// One damaged delta does not keep etcd down: with the data dir lost and the store's newest
// delta cut short, or one byte of it flipped, `etcdbr run` starts etcd on the newest
// revision the rest of the store proves (the revision before the damaged delta) and says
// loudly what was lost: the log names the object, GET /v1/status has the shortfall and the
// damaged object, etcdbr_restore_lost_revisions counts the revisions and
// etcdbr_store_damaged_objects the object, and the served data equals an exact restore of
// that revision. /readyz fails until the restored data is in a full snapshot, then passes
// and still names the damage; a restart keeps the damage visible, and the damaged object
// stays in the store.
func TestRunStartsOnNewestIntactPoint(t *testing.T) {
	src := deltaSource(t)
	ds := deltas(t, src.store)
	damaged := ds[len(ds)-1]
	if damaged.Revision != src.want.Revision {
		t.Fatalf("the newest delta %s does not end at the store's newest revision %d", damaged.Key, src.want.Revision)
	}
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"cut short", func(t *testing.T, path string) {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
		}},
		{"a flipped byte", func(t *testing.T, path string) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)/3] ^= 0x10
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runPastDamage(t, src, damaged, tc.damage)
		})
	}
}

// runPastDamage damages the delta damaged in a copy of src's store with damage, and checks
// what `etcdbr run` does without a data dir (TestRunStartsOnNewestIntactPoint).
func runPastDamage(t *testing.T, src crashSource, damaged catalog.Snapshot, damage func(t *testing.T, path string)) {
	dir := t.TempDir()
	storeDir := filepath.Join(dir, "store")
	copyTree(t, strings.TrimPrefix(src.store, "file://"), storeDir)
	store := "file://" + storeDir
	path := filepath.Join(storeDir, filepath.FromSlash(damaged.Key))
	damage(t, path)
	damagedBytes, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	intact := damaged.From - 1

	// What the store proves: an exact restore of the revision before the damaged delta.
	ref := src.m
	ref.DataDir = filepath.Join(t.TempDir(), "data")
	code, out := runToExit(t, append([]string{"restore", "--data-dir", ref.DataDir, "--store", store, "--exact",
		"--to-revision", fmt.Sprint(intact), "--"}, ref.etcdFlags()...))
	if code != 0 {
		t.Fatalf("etcdbr restore --exact --to-revision %d: exit %d\n%s", intact, code, out)
	}
	want := dumpDataDir(t, ref, ref.DataDir)

	m := src.m
	m.DataDir = filepath.Join(dir, "data")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	args := m.runArgs(store, "--full-snapshot-schedule", "@daily", "--listen-api", addr)
	p := start(t, args)
	newStart := src.want.Revision + catalog.DefaultUnbackedRevisions + catalog.BumpMargin
	sameData(t, want, takeDump(t, m), newStart, "etcd after a restore at start past a damaged delta")
	p.waitLine("backup objects failed verification", time.Minute)
	if !strings.Contains(p.Output(), damaged.Key) {
		t.Fatalf("the log does not name the damaged object %s:\n%s", damaged.Key, p.Output())
	}

	a := newAPI(t, "http://"+addr)
	st := damageStatus(t, a)
	sf := st.Validation.Shortfall
	lost := src.want.Revision - intact
	if sf == nil || sf.Revision != intact || sf.StoreRevision != src.want.Revision || sf.LostRevisions != lost ||
		len(sf.Damaged) != 1 || sf.Damaged[0] != damaged.Key || sf.DataRevision != newStart {
		t.Fatalf("status shortfall: %+v, want revision %d of %d restored, %d lost, %s damaged, data at %d",
			sf, intact, src.want.Revision, lost, damaged.Key, newStart)
	}
	if got := value(t, scrape(t, "http://"+addr), "etcdbr_restore_lost_revisions"); got != float64(lost) {
		t.Fatalf("etcdbr_restore_lost_revisions %v, want %d", got, lost)
	}
	// The new history's full snapshot makes the store prove the member's data again: ready,
	// and the backup check still says what was lost.
	waitFull(t, store, newStart, time.Minute)
	var ready readyAnswer
	waitFor(t, "readiness after the new history's full snapshot", time.Minute, func() bool {
		return a.call(http.MethodGet, "/readyz", "", &ready) == http.StatusOK
	})
	if msg := ready.message("backup"); !strings.Contains(msg, fmt.Sprintf("%d revisions were lost", lost)) || !strings.Contains(msg, damaged.Key) {
		t.Fatalf("the backup readiness check passes without naming the damage: %q", msg)
	}
	waitDamageSeen(t, a, damaged.Key)

	// The restore recorded the damage: list shows no window past it.
	code, out = runToExit(t, []string{"list", "--store", store, "--window-only"})
	if code != 0 || !strings.Contains(out, "damaged: "+damaged.Key) ||
		!strings.Contains(out, fmt.Sprintf("revisions %d to %d are in neither", intact+1, newStart-1)) ||
		strings.Contains(out, "gap:") {
		t.Fatalf("etcdbr list after the restore past a damaged delta: exit %d\n%s", code, out)
	}

	// A restart on the restored data dir keeps it (valid, ahead of the store), and the damage
	// stays visible until a person acts: it is in the store's records, not in the process.
	p.stop()
	p = start(t, args)
	defer p.stop()
	p.waitLine("etcd is ready", time.Minute)
	waitFor(t, "etcd serving again after the restart", time.Minute, func() bool {
		return a.call(http.MethodGet, "/readyz", "", &ready) == http.StatusOK
	})
	if st := damageStatus(t, a); st.Validation.Result != "valid" || st.Validation.Shortfall != nil {
		t.Fatalf("the restart did not keep the restored data dir: validation %+v", st.Validation)
	}
	waitDamageSeen(t, a, damaged.Key)
	if code := a.call(http.MethodGet, "/readyz", "", &ready); code != http.StatusOK {
		t.Fatalf("GET /readyz after the restart: %d: %+v", code, ready)
	}
	if msg := ready.message("backup"); !strings.Contains(msg, "records 1 damaged object(s) ("+damaged.Key) {
		t.Fatalf("the backup readiness check after a restart does not name the damaged object: %q", msg)
	}
	// The damaged object is kept as it was: evidence for whoever replaces it.
	if b, err := os.ReadFile(path); err != nil || !bytes.Equal(b, damagedBytes) {
		t.Fatalf("the damaged object changed or went: %v", err)
	}
}

// statusOfDamage is what GET /v1/status says of damage.
type statusOfDamage struct {
	Validation struct {
		Result    string `json:"result"`
		Shortfall *struct {
			Revision      int64    `json:"revision"`
			StoreRevision int64    `json:"store_revision"`
			LostRevisions int64    `json:"lost_revisions"`
			Damaged       []string `json:"damaged"`
			DataRevision  int64    `json:"data_revision"`
		} `json:"shortfall"`
	} `json:"validation"`
	Backups struct {
		Damaged []struct {
			Key string `json:"key"`
			By  string `json:"by"`
		} `json:"damaged"`
	} `json:"backups"`
}

func damageStatus(t *testing.T, a *api) statusOfDamage {
	t.Helper()
	var st statusOfDamage
	if code := a.call(http.MethodGet, "/v1/status", "", &st); code != http.StatusOK {
		t.Fatalf("GET /v1/status: %d", code)
	}
	return st
}

// waitDamageSeen waits until the member read the store's record of key: the status names
// it (found by the restore) and etcdbr_store_damaged_objects counts it.
func waitDamageSeen(t *testing.T, a *api, key string) {
	t.Helper()
	waitFor(t, "the member to read the store's damage record", time.Minute, func() bool {
		d := damageStatus(t, a).Backups.Damaged
		return len(d) == 1 && d[0].Key == key && d[0].By == "restore"
	})
	if got := value(t, scrape(t, a.base), "etcdbr_store_damaged_objects"); got != 1 {
		t.Fatalf("etcdbr_store_damaged_objects %v, want 1", got)
	}
}

// readyAnswer is the answer of /readyz.
type readyAnswer struct {
	Checks []struct {
		Name    string `json:"name"`
		OK      bool   `json:"ok"`
		Message string `json:"message"`
	} `json:"checks"`
}

// message returns the message of the check name.
func (r readyAnswer) message(name string) string {
	for _, c := range r.Checks {
		if c.Name == name {
			return c.Message
		}
	}
	return ""
}
