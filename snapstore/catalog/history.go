package catalog

import "time"

// A history is one line of revisions that clients were served. A restore to a point before
// the newest revision clients may have seen starts a new history: the restored data dir's
// revision is raised past every revision of the old one and marked compacted there
// (RevisionBump), so that revisions never repeat across histories and every watcher of the
// old history is told "compacted" and lists again (kube-apiserver's watch cache, informers).
// The store records where each new history starts (snapstore's Store.RecordHistory), so
// that a listing tells the revisions that never existed from backups that are missing.

// BumpMargin is how far past the newest revision clients may have seen a new history
// starts. It must be at least 2: a client that saw revision N resumes its watch at N+1, and
// etcd accepts a watch at exactly its compacted revision, so the compacted revision must be
// above N+1. The rest is slack for a bound that is off by a few.
const BumpMargin = 1000

// DefaultUnbackedRevisions bounds how many revisions a member may have served beyond the
// newest revision in the store when nothing else says (a restore at start-up after a lost
// data dir, an offline restore): the revisions written after the last delta and lost with
// the member. It is the bump etcd's own documentation uses when the revisions clients saw
// are unknown; revisions are int64, so a billion per restore leaves room for billions of
// restores.
const DefaultUnbackedRevisions = 1_000_000_000

// RevisionBump returns how much a restore that ends at revision restored must raise the
// revision so that the restored data starts a history no client can confuse with the one
// that served revisions up to served: 0 when restored is not before served (nothing newer
// was served: the restore continues the same history); otherwise the data dir's revision
// becomes served+BumpMargin, marked compacted there, above served+1 where a caught-up
// watcher resumes.
func RevisionBump(restored, served int64) uint64 {
	if restored >= served {
		return 0
	}
	return uint64(served - restored + BumpMargin)
}

// History is the record of a history that a restore started.
type History struct {
	// Version is the format's version (1).
	Version int `json:"version"`
	// Start is the history's first revision: the restored data dir's revision after the
	// bump, compacted there. No revision between the previous history's last one and Start
	// ever existed.
	Start int64 `json:"start"`
	// Began is when the restore built the data dir.
	Began time.Time `json:"began"`
	// Revision is the point of the earlier history the new one continues from (the revision
	// restored), RevisionTime when it was observed.
	Revision     int64     `json:"revision"`
	RevisionTime time.Time `json:"revision_time,omitzero"`
	// Served is the bound on the revisions the earlier history served that the bump passed.
	Served int64 `json:"served"`
	// Trigger says what asked for the restore: request (the API), corrupt (a CORRUPT
	// alarm), start (a missing, corrupt or stale data dir at start), offline (etcdbr
	// restore).
	Trigger string `json:"trigger,omitempty"`
}
