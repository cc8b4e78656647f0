package testsuite

import (
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
// delta cut short, `etcdbr run` starts etcd on the newest revision the rest of the store
// proves (the revision before the damaged delta) and says loudly what was lost: the log
// names the object, GET /v1/status has the shortfall, etcdbr_restore_lost_revisions counts
// the revisions, and the served data equals an exact restore of that revision.
func TestRunStartsOnNewestIntactPoint(t *testing.T) {
	src := deltaSource(t)
	ds := deltas(t, src.store)
	damaged := ds[len(ds)-1]
	if damaged.Revision != src.want.Revision {
		t.Fatalf("the newest delta %s does not end at the store's newest revision %d", damaged.Key, src.want.Revision)
	}
	dir := t.TempDir()
	storeDir := filepath.Join(dir, "store")
	copyTree(t, strings.TrimPrefix(src.store, "file://"), storeDir)
	store := "file://" + storeDir
	path := filepath.Join(storeDir, filepath.FromSlash(damaged.Key))
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, fi.Size()/2); err != nil {
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
	p := start(t, m.runArgs(store, "--full-snapshot-schedule", "@daily", "--listen-api", addr))
	defer p.stop()
	newStart := src.want.Revision + catalog.DefaultUnbackedRevisions + catalog.BumpMargin
	sameData(t, want, takeDump(t, m), newStart, "etcd after a restore at start past a damaged delta")
	p.waitLine("backup objects failed verification", time.Minute)
	if !strings.Contains(p.Output(), damaged.Key) {
		t.Fatalf("the log does not name the damaged object %s:\n%s", damaged.Key, p.Output())
	}

	a := newAPI(t, "http://"+addr)
	var st struct {
		Validation struct {
			Shortfall *struct {
				Revision      int64    `json:"revision"`
				StoreRevision int64    `json:"store_revision"`
				LostRevisions int64    `json:"lost_revisions"`
				Damaged       []string `json:"damaged"`
				DataRevision  int64    `json:"data_revision"`
			} `json:"shortfall"`
		} `json:"validation"`
	}
	if code := a.call(http.MethodGet, "/v1/status", "", &st); code != http.StatusOK {
		t.Fatalf("GET /v1/status: %d", code)
	}
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
	// The new history's full snapshot makes the store prove the member's data again.
	waitFull(t, store, newStart, time.Minute)
	waitFor(t, "readiness after the new history's full snapshot", time.Minute, func() bool {
		return a.call(http.MethodGet, "/readyz", "", nil) == http.StatusOK
	})

	// The restore recorded the damage: list shows no window past it.
	code, out = runToExit(t, []string{"list", "--store", store, "--window-only"})
	if code != 0 || !strings.Contains(out, "damaged: "+damaged.Key) ||
		!strings.Contains(out, fmt.Sprintf("revisions %d to %d are in neither", intact+1, newStart-1)) ||
		strings.Contains(out, "gap:") {
		t.Fatalf("etcdbr list after the restore past a damaged delta: exit %d\n%s", code, out)
	}
}
