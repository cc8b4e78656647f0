package snapstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"gocloud.dev/gcerrors"
)

// ClusterIDKey is the object, at the root of the store's prefix, that records the
// etcd cluster the store belongs to. The first backup writes it; it is never
// overwritten with another cluster's ID, except by ReclaimClusterID (a restore,
// forced or by the store's own cluster, that created a new cluster ID).
const ClusterIDKey = "cluster.json"

// clusterFileVersion is the version of ClusterIDKey's format. Fields added later
// must be optional and ignorable (readers of the same version ignore what they do
// not know); the version changes only when an old reader would misread the file.
const clusterFileVersion = 1

// maxClusterFileSize bounds what is read of the cluster object.
const maxClusterFileSize = 64 << 10

// maxClusterHistory bounds how many replaced clusters the record keeps.
const maxClusterHistory = 100

// ErrClusterMismatch is wrapped by the errors of a store that belongs to another
// etcd cluster than the one asked about.
var ErrClusterMismatch = errors.New("the store belongs to another etcd cluster")

// ClusterRecord is the content of ClusterIDKey: the cluster the store belongs
// to, and the clusters it belonged to before.
type ClusterRecord struct {
	// Version is the format's version (1).
	Version int `json:"version"`
	// ClusterID is the cluster the store belongs to, in etcd's hex form.
	ClusterID string `json:"cluster_id"`
	// Written is when ClusterID was recorded.
	Written time.Time `json:"written"`
	// Previous are the clusters the store belonged to before, the most recently
	// replaced first (absent in records that never changed hands, and in those
	// written by etcdbr before it kept them).
	Previous []PreviousCluster `json:"previous,omitempty"`
}

// PreviousCluster is a cluster the store belonged to until ReclaimClusterID
// replaced it.
type PreviousCluster struct {
	ClusterID string    `json:"cluster_id"`
	Written   time.Time `json:"written"`  // when it was recorded
	Replaced  time.Time `json:"replaced"` // when it was replaced
}

// ClusterID returns the cluster ID the store belongs to (etcd's hex form); ok is
// false when the store does not record one yet (no backup was taken by an
// etcdbr that records it).
func (s *Store) ClusterID(ctx context.Context) (id string, ok bool, err error) {
	rec, ok, err := s.ClusterRecord(ctx)
	return rec.ClusterID, ok, err
}

// ClusterRecord returns the store's cluster record (ClusterIDKey); ok is false
// when the store has none, as a store of another tool never has.
func (s *Store) ClusterRecord(ctx context.Context) (rec ClusterRecord, ok bool, err error) {
	if s.foreign != nil {
		return ClusterRecord{}, false, nil
	}
	r, err := s.bucket.NewReader(ctx, ClusterIDKey, nil)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return ClusterRecord{}, false, nil
	}
	if err != nil {
		return ClusterRecord{}, false, fmt.Errorf("read the cluster ID of store %q: %w", s.url, err)
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, maxClusterFileSize+1))
	if err != nil {
		return ClusterRecord{}, false, fmt.Errorf("read the cluster ID of store %q: %w", s.url, err)
	}
	switch err := json.Unmarshal(data, &rec); {
	case len(data) > maxClusterFileSize:
		return ClusterRecord{}, false, fmt.Errorf("store %q: %s is larger than %d bytes: it was not written by etcdbr; move it away", s.url, ClusterIDKey, maxClusterFileSize)
	case err != nil:
		return ClusterRecord{}, false, fmt.Errorf("store %q: %s is unreadable (%v): it was not written by etcdbr; move it away", s.url, ClusterIDKey, err)
	case rec.Version != clusterFileVersion:
		return ClusterRecord{}, false, fmt.Errorf("store %q: %s has version %d; this etcdbr reads version %d: use a newer etcdbr",
			s.url, ClusterIDKey, rec.Version, clusterFileVersion)
	case rec.ClusterID == "":
		return ClusterRecord{}, false, fmt.Errorf("store %q: %s holds no cluster ID; move it away", s.url, ClusterIDKey)
	}
	return rec, true, nil
}

// ClaimClusterID records that the store belongs to the cluster id, unless it
// already records one: the same ID is fine, another one is an error wrapping
// ErrClusterMismatch and nothing is written. Where the store supports it, the
// write is conditional (if the object does not exist), so that two clusters
// racing for one empty store cannot both win.
func (s *Store) ClaimClusterID(ctx context.Context, id string) error {
	if id == "" {
		return errors.New("claim store: empty cluster ID")
	}
	check := func() (bool, error) {
		have, ok, err := s.ClusterID(ctx)
		if err != nil || !ok {
			return false, err
		}
		if have != id {
			return true, fmt.Errorf("store %q records cluster %s, not %s: %w; give each cluster its own store (another prefix)",
				s.url, have, id, ErrClusterMismatch)
		}
		return true, nil
	}
	if done, err := check(); done || err != nil {
		return err
	}
	err := s.writeClusterRecord(ctx, ClusterRecord{Version: clusterFileVersion, ClusterID: id, Written: time.Now().UTC()}, true)
	if errors.Is(err, errRecordExists) {
		_, err := check() // written meanwhile: by whom?
		return err
	}
	if err != nil {
		return fmt.Errorf("record the cluster ID in store %q: %w", s.url, err)
	}
	return nil
}

// ReclaimClusterID records that the store now belongs to cluster newID instead
// of oldID: after a restore of oldID's backups created a member of another
// cluster ID (forced, or by the store's own member whose peer URLs or token
// changed). It replaces the record only while it names oldID, and keeps oldID,
// with when it was recorded and when it was replaced, in the record's history
// (ClusterRecord.Previous). A record that names newID already is left as it is;
// one that names a third cluster is an error wrapping ErrClusterMismatch, and
// nothing is written; a store without a record is claimed for newID
// (ClaimClusterID).
//
// Object stores offer no portable compare-and-swap: the record is read, checked,
// replaced, and read back. Two reclaims racing for one store (two forced restores
// at the same moment) may both pass the check; the read-back then reports the one
// that lost with ErrClusterMismatch.
func (s *Store) ReclaimClusterID(ctx context.Context, newID, oldID string) error {
	if newID == "" || oldID == "" {
		return errors.New("reclaim store: empty cluster ID")
	}
	rec, ok, err := s.ClusterRecord(ctx)
	switch {
	case err != nil:
		return err
	case !ok:
		return s.ClaimClusterID(ctx, newID)
	case rec.ClusterID == newID:
		return nil
	case rec.ClusterID != oldID:
		return fmt.Errorf("store %q records cluster %s, neither %s (whose backups were restored) nor %s: %w; it was not replaced",
			s.url, rec.ClusterID, oldID, newID, ErrClusterMismatch)
	}
	now := time.Now().UTC()
	prev := append([]PreviousCluster{{ClusterID: rec.ClusterID, Written: rec.Written, Replaced: now}}, rec.Previous...)
	if len(prev) > maxClusterHistory {
		prev = prev[:maxClusterHistory]
	}
	next := ClusterRecord{Version: clusterFileVersion, ClusterID: newID, Written: now, Previous: prev}
	if err := s.writeClusterRecord(ctx, next, false); err != nil {
		return fmt.Errorf("record cluster %s (replacing %s) in store %q: %w", newID, oldID, s.url, err)
	}
	have, _, err := s.ClusterID(ctx)
	switch {
	case err != nil:
		return fmt.Errorf("read back the cluster record of store %q: %w", s.url, err)
	case have != newID:
		return fmt.Errorf("store %q: recorded cluster %s, but the record names %s now (written meanwhile by another etcdbr): %w",
			s.url, newID, have, ErrClusterMismatch)
	}
	return nil
}

// writeClusterRecord writes rec as ClusterIDKey (mode 0600 in a file store);
// ifNotExist makes the write conditional where the driver supports it.
func (s *Store) writeClusterRecord(ctx context.Context, rec ClusterRecord, ifNotExist bool) error {
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	err = s.writeRecord(ctx, ClusterIDKey, data, ifNotExist)
	if ifNotExist && gcerrors.Code(err) == gcerrors.Unimplemented {
		err = s.writeRecord(ctx, ClusterIDKey, data, false) // checked before; the race window is the driver's
	}
	return err
}
