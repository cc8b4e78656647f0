package datadir

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	berrors "go.etcd.io/bbolt/errors"

	"github.com/etcdbr/etcdbr/internal/dbrev"
	"github.com/etcdbr/etcdbr/internal/fsync"
)

// CleanStopMarkerName is the file, in the data dir, that WriteCleanStopMarker
// writes after etcd stopped cleanly and RemoveCleanStopMarker removes before
// etcd starts.
const CleanStopMarkerName = "etcdbr-clean-stop.json"

// markerVersion is the version of the marker's format this etcdbr writes and reads.
const markerVersion = 1

// maxMarkerSize bounds what is read of a marker file.
const maxMarkerSize = 1 << 20

// cleanStopMarker is what a clean stop records: enough to trust the member's
// files later without reading them all.
type cleanStopMarker struct {
	Version  int       `json:"version"`
	Written  time.Time `json:"written"`
	Revision int64     `json:"revision"`
	// ClusterID and MemberID are from the WAL's metadata, in etcd's hex form.
	ClusterID string       `json:"cluster_id,omitempty"`
	MemberID  string       `json:"member_id,omitempty"`
	Files     []markerFile `json:"files"`
}

// markerFile is one file of the snap or WAL dir as the marker saw it.
type markerFile struct {
	Path  string `json:"path"` // "snap/<name>" or "wal/<name>"
	Size  int64  `json:"size"`
	MTime int64  `json:"mtime_ns"`
	CTime int64  `json:"ctime_ns,omitempty"` // inode change time where the OS has one
	Mode  uint32 `json:"mode"`
}

func markerPath(dataDir string) string { return filepath.Join(dataDir, CleanStopMarkerName) }

// WriteCleanStopMarker records, in the data dir, that etcd stopped cleanly on
// it: the size, times and mode of every file of the snap and WAL dirs, and the
// db's revision. Call it only after etcd stopped without an error; a later
// InspectWith at DepthAuto or DepthQuick then trusts the dir without reading it
// all, as long as none of those files changed. The marker is written to a
// temporary file, fsynced and renamed into place.
func WriteCleanStopMarker(dataDir, walDir string) error {
	l := newMemberLayout(dataDir, walDir)
	files, err := markerFiles(l)
	if err != nil {
		return fmt.Errorf("write the clean-stop marker of data dir %q: %w", dataDir, err)
	}
	rev, err := readRevisionQuick(l.db)
	if err != nil {
		return fmt.Errorf("write the clean-stop marker of data dir %q: %w", dataDir, err)
	}
	m := cleanStopMarker{Version: markerVersion, Written: time.Now().UTC(), Revision: rev, Files: files}
	if id, err := readWALIDs(l.walDir); err == nil {
		m.ClusterID, m.MemberID = id.ClusterID, id.MemberID
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("write the clean-stop marker of data dir %q: %w", dataDir, err)
	}
	tmp := markerPath(dataDir) + ".tmp"
	if err := fsync.WriteFile(tmp, data); err != nil {
		return fmt.Errorf("write the clean-stop marker of data dir %q: %w", dataDir, err)
	}
	if err := os.Rename(tmp, markerPath(dataDir)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write the clean-stop marker of data dir %q: %w", dataDir, err)
	}
	if err := fsync.Path(dataDir); err != nil {
		return fmt.Errorf("write the clean-stop marker of data dir %q: %w", dataDir, err)
	}
	return nil
}

// RemoveCleanStopMarker removes the clean-stop marker of the data dir (no
// error when there is none) and fsyncs the dir, so that a crash of the etcd
// about to start cannot leave a marker behind. Call it before etcd starts.
func RemoveCleanStopMarker(dataDir string) error {
	err := os.Remove(markerPath(dataDir))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("remove the clean-stop marker of data dir %q (etcd must not start while it is there): %w", dataDir, err)
	}
	if err := fsync.Path(dataDir); err != nil {
		return fmt.Errorf("remove the clean-stop marker of data dir %q: %w", dataDir, err)
	}
	return nil
}

// markerFiles lists the files of the snap and WAL dirs, sorted by path.
func markerFiles(l memberLayout) ([]markerFile, error) {
	var out []markerFile
	for _, d := range []struct{ prefix, dir string }{{"snap/", l.snapDir}, {"wal/", l.walDir}} {
		entries, err := os.ReadDir(d.dir)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if e.IsDir() {
				continue
			}
			st, err := e.Info()
			if err != nil {
				return nil, err
			}
			out = append(out, markerFile{
				Path:  d.prefix + e.Name(),
				Size:  st.Size(),
				MTime: st.ModTime().UnixNano(),
				CTime: changeTime(st),
				Mode:  uint32(st.Mode()),
			})
		}
	}
	slices.SortFunc(out, func(a, b markerFile) int {
		switch {
		case a.Path < b.Path:
			return -1
		case a.Path > b.Path:
			return 1
		}
		return 0
	})
	return out, nil
}

// readMarker reads the marker of the data dir; ok is false with the reason when
// there is none or it cannot be used.
func readMarker(dataDir string) (m cleanStopMarker, why string, err error) {
	f, err := os.Open(markerPath(dataDir))
	if errors.Is(err, fs.ErrNotExist) {
		return m, "no clean-stop marker (etcd did not stop cleanly under etcdbr, or it is running)", nil
	}
	if err != nil {
		return m, "", fmt.Errorf("cannot read the clean-stop marker %q: %w", markerPath(dataDir), err)
	}
	defer f.Close()
	data := make([]byte, maxMarkerSize+1)
	n, _ := readFull(f, data)
	if n > maxMarkerSize {
		return m, fmt.Sprintf("clean-stop marker %q is larger than %d bytes", markerPath(dataDir), maxMarkerSize), nil
	}
	if err := json.Unmarshal(data[:n], &m); err != nil {
		return m, fmt.Sprintf("clean-stop marker %q is unreadable: %v", markerPath(dataDir), err), nil
	}
	if m.Version != markerVersion {
		return m, fmt.Sprintf("clean-stop marker %q has version %d; this etcdbr reads version %d", markerPath(dataDir), m.Version, markerVersion), nil
	}
	return m, "", nil
}

func readFull(f *os.File, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := f.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// markerMismatch compares the recorded files with the current ones and
// describes the first difference ("" when they match).
func markerMismatch(recorded, current []markerFile) string {
	byPath := make(map[string]markerFile, len(current))
	for _, f := range current {
		byPath[f.Path] = f
	}
	for _, r := range recorded {
		c, ok := byPath[r.Path]
		switch {
		case !ok:
			return fmt.Sprintf("%s is gone since the clean stop", r.Path)
		case c.Size != r.Size:
			return fmt.Sprintf("%s changed size since the clean stop (%d bytes, then %d)", r.Path, c.Size, r.Size)
		case c.MTime != r.MTime || c.CTime != r.CTime:
			return fmt.Sprintf("%s was changed since the clean stop", r.Path)
		case c.Mode != r.Mode:
			return fmt.Sprintf("%s changed mode since the clean stop", r.Path)
		}
		delete(byPath, r.Path)
	}
	for p := range byPath {
		return fmt.Sprintf("%s appeared since the clean stop", p)
	}
	return ""
}

// quick is the quick check; ok is false when it could not decide (no usable
// marker, or it found a problem), with the verdict to report at DepthQuick.
func (in *inspection) quick() (Verdict, bool) {
	l := in.layout
	in.checked = DepthQuick
	in.current = fmt.Sprintf("clean-stop marker %q", markerPath(l.dataDir))
	m, why, err := readMarker(l.dataDir)
	if err != nil {
		return in.fail(err), false
	}
	if why != "" {
		return in.unknown("quick validation needs a clean-stop marker: %s; validate fully", why), false
	}
	current, err := markerFiles(l)
	if err != nil {
		return in.fail(fmt.Errorf("cannot list the member files of data dir %q: %w", l.dataDir, err)), false
	}
	if diff := markerMismatch(m.Files, current); diff != "" {
		return in.unknown("the clean-stop marker does not match the data dir: %s; validate fully", diff), false
	}
	in.current = fmt.Sprintf("db file %q", l.db)
	rev, err := readRevisionQuick(l.db)
	if err != nil {
		return in.fail(err), false
	}
	in.revision = rev
	if rev != m.Revision {
		return in.corrupt("db file %q holds revision %d, but it held %d at the clean stop", l.db, rev, m.Revision), false
	}
	return Verdict{State: StateValid, Revision: rev, Depth: DepthQuick}, true
}

// readRevisionQuick opens the db read-only (bbolt checks its meta pages) and
// reads its revision. A db locked by another process gives an error wrapping
// errLocked.
func readRevisionQuick(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("cannot read db file %q: %w", path, err)
	}
	f.Close()
	rev, err := dbrev.FileRevision(path, dbLockTimeout)
	if errors.Is(err, berrors.ErrTimeout) {
		return 0, fmt.Errorf("db file %q is %w (is etcd running on this data dir?)", path, errLocked)
	}
	if err != nil {
		return 0, fmt.Errorf("db file %q cannot be read by bbolt: %v", path, err)
	}
	return rev, nil
}
