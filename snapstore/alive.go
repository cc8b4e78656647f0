package snapstore

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"gocloud.dev/gcerrors"
)

// The liveness records of the clusters that own the store, one per cluster:
//
//	alive/<cluster-id>.json
//
// The etcdbr that backs a cluster up (its leader's) rewrites its cluster's record at a
// bounded rate (AliveRecord.Refresh) while it runs, whether or not etcd's data changes, so
// that a new machine with an empty data dir can tell an owner that stopped writing (its
// machine is gone: the new one takes the store over) from one that is alive but idle (it is
// refused). One key per cluster: an owner that still runs after its store was taken over
// only ever rewrites its own record, never the new owner's.
const alivePrefix = "alive/"

// aliveFileVersion is the version of an AliveRecord's format; fields added later must be
// optional and ignorable.
const aliveFileVersion = 1

// maxAliveFileSize bounds what is read of a liveness record.
const maxAliveFileSize = 16 << 10

// AliveKey is the key of cluster's liveness record under the store's prefix.
func AliveKey(cluster string) string { return alivePrefix + cluster + ".json" }

// AliveRecord is a cluster's liveness record (AliveKey): when the etcdbr that backs it up
// last said it runs, and how long a new machine waits on its silence before it takes the
// store over.
type AliveRecord struct {
	// Version is the format's version (1).
	Version int `json:"version"`
	// ClusterID is the cluster whose etcdbr writes the record (etcd's hex form).
	ClusterID string `json:"cluster_id"`
	// Member is the name of the etcd member whose etcdbr wrote it last, for people.
	Member string `json:"member,omitempty"`
	// Written is when it was written, by the writer's clock: for people, and to tell two
	// writes apart when the store's modification times are coarse (S3: one second).
	Written time.Time `json:"written"`
	// TakeoverAfter is the writer's bound: a new machine takes the store over once the
	// record has stayed unchanged this long (0: never automatically).
	TakeoverAfter Duration `json:"takeover_after"`
	// Refresh is how often the writer rewrites the record while it runs.
	Refresh Duration `json:"refresh"`

	// ModTime is when the store last wrote the record (the store's clock), set by Alive;
	// never stored.
	ModTime time.Time `json:"-"`
}

// Duration is a time.Duration stored as its string form ("10m0s") in the store's records.
type Duration time.Duration

// MarshalJSON writes d as time.Duration's string form.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads d from time.Duration's string form.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string such as \"10m0s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Same reports whether a and b are the same write of a record: the same modification time
// in the store and the same content's time.
func (a AliveRecord) Same(b AliveRecord) bool {
	return a.ModTime.Equal(b.ModTime) && a.Written.Equal(b.Written) && a.ClusterID == b.ClusterID
}

// WriteAlive writes rec as its cluster's liveness record (mode 0600 in a file store), its
// version set. One small PUT.
func (s *Store) WriteAlive(ctx context.Context, rec AliveRecord) error {
	if !validAliveName(rec.ClusterID) {
		return fmt.Errorf("write a liveness record: invalid cluster ID %q", rec.ClusterID)
	}
	rec.Version = aliveFileVersion
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	if err := s.writeRecord(ctx, AliveKey(rec.ClusterID), data, false); err != nil {
		return fmt.Errorf("write the liveness record of cluster %s in store %q: %w", rec.ClusterID, s.url, err)
	}
	return nil
}

// Alive reads cluster's liveness record, with the store's modification time of it; ok is
// false when there is none (an older etcdbr, the sidecar, or a cluster that never backed up
// into the store). One small GET.
func (s *Store) Alive(ctx context.Context, cluster string) (rec AliveRecord, ok bool, err error) {
	if s.foreign != nil {
		return AliveRecord{}, false, nil
	}
	if !validAliveName(cluster) {
		return AliveRecord{}, false, fmt.Errorf("read a liveness record: invalid cluster ID %q", cluster)
	}
	key := AliveKey(cluster)
	r, err := s.bucket.NewReader(ctx, key, nil)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return AliveRecord{}, false, nil
	}
	if err != nil {
		return AliveRecord{}, false, fmt.Errorf("read %s in %q: %w", key, s.url, err)
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, maxAliveFileSize+1))
	switch {
	case gcerrors.Code(err) == gcerrors.NotFound:
		return AliveRecord{}, false, nil
	case err != nil:
		return AliveRecord{}, false, fmt.Errorf("read %s in %q: %w", key, s.url, err)
	case len(data) > maxAliveFileSize:
		return AliveRecord{}, false, fmt.Errorf("store %q: %s is larger than %d bytes: it was not written by etcdbr; move it away", s.url, key, maxAliveFileSize)
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		return AliveRecord{}, false, fmt.Errorf("store %q: %s is unreadable (%v): it was not written by etcdbr; move it away", s.url, key, err)
	}
	switch {
	case rec.Version != aliveFileVersion:
		return AliveRecord{}, false, fmt.Errorf("store %q: %s has version %d; this etcdbr reads version %d: use a newer etcdbr",
			s.url, key, rec.Version, aliveFileVersion)
	case rec.ClusterID != cluster:
		return AliveRecord{}, false, fmt.Errorf("store %q: %s names cluster %q: it was not written by etcdbr; move it away", s.url, key, rec.ClusterID)
	}
	rec.ModTime = r.ModTime().UTC()
	if rec.ModTime.IsZero() {
		return AliveRecord{}, false, fmt.Errorf("store %q: the store gives no modification time of %s", s.url, key)
	}
	return rec, true, nil
}

// validAliveName reports whether id can name a liveness record: etcd's hex cluster IDs, and
// nothing that leaves alive/.
func validAliveName(id string) bool {
	return id != "" && len(id) <= 64 && !strings.ContainsAny(id, "/\\.")
}
