package snapstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

// ClusterIDKey is the object, at the root of the store's prefix, that records the
// etcd cluster the store belongs to. The first backup writes it; it is never
// overwritten with another cluster's ID.
const ClusterIDKey = "cluster.json"

// maxClusterFileSize bounds what is read of the cluster object.
const maxClusterFileSize = 64 << 10

// ErrClusterMismatch is wrapped by the errors of a store that belongs to another
// etcd cluster than the one asked about.
var ErrClusterMismatch = errors.New("the store belongs to another etcd cluster")

// clusterFile is the content of ClusterIDKey.
type clusterFile struct {
	Version   int       `json:"version"`
	ClusterID string    `json:"cluster_id"`
	Written   time.Time `json:"written"`
}

// ClusterID returns the cluster ID the store belongs to (etcd's hex form); ok is
// false when the store does not record one yet (no backup was taken by an
// etcdbr that records it).
func (s *Store) ClusterID(ctx context.Context) (id string, ok bool, err error) {
	r, err := s.bucket.NewReader(ctx, ClusterIDKey, nil)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read the cluster ID of store %q: %w", s.url, err)
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, maxClusterFileSize+1))
	if err != nil {
		return "", false, fmt.Errorf("read the cluster ID of store %q: %w", s.url, err)
	}
	var f clusterFile
	switch err := json.Unmarshal(data, &f); {
	case len(data) > maxClusterFileSize:
		return "", false, fmt.Errorf("store %q: %s is larger than %d bytes: it was not written by etcdbr; move it away", s.url, ClusterIDKey, maxClusterFileSize)
	case err != nil:
		return "", false, fmt.Errorf("store %q: %s is unreadable (%v): it was not written by etcdbr; move it away", s.url, ClusterIDKey, err)
	case f.Version != 1:
		return "", false, fmt.Errorf("store %q: %s has version %d; this etcdbr reads version 1", s.url, ClusterIDKey, f.Version)
	case f.ClusterID == "":
		return "", false, fmt.Errorf("store %q: %s holds no cluster ID; move it away", s.url, ClusterIDKey)
	}
	return f.ClusterID, true, nil
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
	data, err := json.MarshalIndent(clusterFile{Version: 1, ClusterID: id, Written: time.Now().UTC()}, "", "  ")
	if err != nil {
		return fmt.Errorf("claim store %q: %w", s.url, err)
	}
	write := func(ifNotExist bool) error {
		var file *os.File
		return s.bucket.WriteAll(ctx, ClusterIDKey, data, &blob.WriterOptions{
			ContentType: "application/json",
			IfNotExist:  ifNotExist,
			BeforeWrite: func(as func(any) bool) error {
				if as(&file) {
					return file.Chmod(0o600)
				}
				return nil
			},
		})
	}
	err = write(true)
	if gcerrors.Code(err) == gcerrors.Unimplemented {
		err = write(false) // checked above; the race window is the driver's
	}
	if gcerrors.Code(err) == gcerrors.FailedPrecondition {
		_, err := check() // written meanwhile: by whom?
		return err
	}
	if err != nil {
		return fmt.Errorf("record the cluster ID in store %q: %w", s.url, err)
	}
	return nil
}
