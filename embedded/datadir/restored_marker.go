package datadir

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/etcdbr/etcdbr/internal/fsync"
)

// RestoredMarkerName is the file, in a data dir that a restore built, that says what the
// restore did (RestoredMarker). It is written into the staged data dir and swapped in with
// it, so that a data dir and its marker always go together; etcd ignores it.
const RestoredMarkerName = "etcdbr-restored.json"

// restoredMarkerVersion is the version of RestoredMarker's format.
const restoredMarkerVersion = 1

// RestoredMarker is what a restore records in the data dir it built.
type RestoredMarker struct {
	// Version is the format's version (1).
	Version int `json:"version"`
	// Written is when the restore built the data dir.
	Written time.Time `json:"written"`
	// Source is the store the data dir was restored from (its URL, secrets redacted).
	Source string `json:"source,omitempty"`
	// Trigger says what asked for the restore (catalog.History.Trigger).
	Trigger string `json:"trigger,omitempty"`
	// Revision is the revision restored, RevisionTime when it was observed (zero when it
	// is the full snapshot's, which the caller knows).
	Revision     int64     `json:"revision"`
	RevisionTime time.Time `json:"revision_time,omitzero"`
	// DataRevision is the data dir's revision after Bump; with a bump the data dir is
	// marked compacted there and starts a new history.
	DataRevision int64  `json:"data_revision"`
	Bump         uint64 `json:"bump,omitempty"`
	// Served is the bound on the revisions clients may have seen that the bump passed (0:
	// none was given).
	Served int64 `json:"served,omitempty"`
	// Exact marks a copy restored exactly as it was, without the bump a restore to an
	// earlier point needs (forensics): it must never back up into Source, whose history
	// it would mix with another.
	Exact bool `json:"exact,omitempty"`
	// ClusterRestore is the whole-cluster restore (its intent's ID) that built the data dir
	// ("" none): a member that restarts during that restore knows its part is done.
	ClusterRestore string `json:"cluster_restore,omitempty"`
}

// NewHistory reports whether the restore started a new history (it bumped the revision).
func (m RestoredMarker) NewHistory() bool { return m.Bump > 0 }

func restoredMarkerPath(dataDir string) string { return filepath.Join(dataDir, RestoredMarkerName) }

// WriteRestoredMarker sets m's version and time and writes it into dataDir (a restore's
// staged data dir, which the restore fsyncs as a whole before swapping it in).
func WriteRestoredMarker(dataDir string, m *RestoredMarker) error {
	m.Version, m.Written = restoredMarkerVersion, time.Now().UTC()
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("write %s: %w", RestoredMarkerName, err)
	}
	if err := fsync.WriteFile(restoredMarkerPath(dataDir), data); err != nil {
		return fmt.Errorf("write %s: %w", RestoredMarkerName, err)
	}
	return nil
}

// ReadRestoredMarker returns the marker a restore left in dataDir; ok is false when there is
// none. A marker that cannot be read is an error that names it.
func ReadRestoredMarker(dataDir string) (m RestoredMarker, ok bool, err error) {
	f, err := os.Open(restoredMarkerPath(dataDir))
	if errors.Is(err, fs.ErrNotExist) {
		return m, false, nil
	}
	if err != nil {
		return m, false, fmt.Errorf("read the restore marker %q: %w", restoredMarkerPath(dataDir), err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxMarkerSize+1))
	switch {
	case err != nil:
		return m, false, fmt.Errorf("read the restore marker %q: %w", restoredMarkerPath(dataDir), err)
	case len(data) > maxMarkerSize:
		return m, false, fmt.Errorf("restore marker %q is larger than %d bytes: move it out of the data dir", restoredMarkerPath(dataDir), maxMarkerSize)
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, false, fmt.Errorf("restore marker %q is unreadable (%v): move it out of the data dir", restoredMarkerPath(dataDir), err)
	}
	if m.Version != restoredMarkerVersion {
		return m, false, fmt.Errorf("restore marker %q has version %d; this etcdbr reads version %d: use a newer etcdbr",
			restoredMarkerPath(dataDir), m.Version, restoredMarkerVersion)
	}
	return m, true, nil
}
