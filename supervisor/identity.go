package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/internal/backoff"
	"github.com/etcdbr/etcdbr/snapstore"
)

// A store belongs to one etcd cluster (snapstore.ClusterIDKey records it). The
// leader claims the store before its first upload of every run of etcd: a store
// of another cluster gets no backup, full or delta, and health, status and
// metrics say why. A restore checks, before it touches anything, that the
// cluster it creates (from the etcd configuration: embedded.ClusterIDFor) may
// use the store: CheckRestoreCluster.

// How the claim of the store is retried.
const (
	// claimRetryMin and claimRetryMax bound the backoff after a store error.
	claimRetryMin = time.Second
	claimRetryMax = 30 * time.Second
	// claimRecheck is how often a store of another cluster is read again (it may
	// have been given to this cluster meanwhile).
	claimRecheck = time.Minute
	// followTimeout bounds one attempt to record the new cluster after a restore.
	followTimeout = 30 * time.Second
)

// RestoreCluster are the cluster IDs (etcd's hex form) a restore from a store
// involves, and what the user allowed.
type RestoreCluster struct {
	// Store is the cluster the store records ("" when it records none yet: the
	// first backup claims it).
	Store string
	// New is the cluster the restore creates from the etcd configuration
	// (embedded.ClusterIDFor; "" when unknown).
	New string
	// Replaced is the cluster of the data the restore replaces: the data dir's, or
	// the running member's ("" when there is none or it cannot be read).
	Replaced string
	// Force (--force-restore) restores anyway; the store then records New.
	Force bool
	// Keep (etcdbr restore --keep-store-cluster) restores anyway and leaves the
	// store's record as it is: the restored member is a copy that backs up
	// elsewhere.
	Keep bool
}

// CheckRestoreCluster decides whether a restore may go ahead, and whether the
// store's record then moves to the new cluster (follow). It does no I/O.
//
// A restore that creates the store's own cluster, or uses a store that records
// none, goes ahead. One that creates another cluster (other peer URLs or another
// initial cluster token than those of the cluster that took the backups) goes
// ahead and the store follows it when the data it replaces belonged to the
// store's cluster (the same single member, whose peer URLs or token changed) or
// with Force; it goes ahead without touching the record with Keep; otherwise it
// is refused with an error wrapping snapstore.ErrClusterMismatch that names both
// clusters, the likely cause and the fixes.
func CheckRestoreCluster(c RestoreCluster) (follow bool, err error) {
	switch {
	case c.Store == "" || c.New == "" || c.New == c.Store:
		return false, nil
	case c.Keep:
		return false, nil
	case c.Force || c.Replaced == c.Store:
		return true, nil
	}
	return false, clusterError(fmt.Sprintf("the store belongs to cluster %s, but a restore with this etcd configuration creates cluster %s: "+
		"its peer URLs (--initial-cluster, --initial-advertise-peer-urls) or --initial-cluster-token differ from those of the cluster "+
		"that took the backups; nothing was changed. If the new cluster replaces the old one, restore with --force-restore: "+
		"the store then belongs to cluster %s and its backups continue the store's; otherwise give this cluster its own store "+
		"(another prefix), or the initial cluster and token of the cluster that took the backups",
		c.Store, c.New, c.New))
}

// clusterError is an error that says itself why a store belongs to another
// cluster; it wraps snapstore.ErrClusterMismatch.
type clusterError string

func (e clusterError) Error() string { return string(e) }
func (e clusterError) Unwrap() error { return snapstore.ErrClusterMismatch }

// RestoreClusterFor reads the cluster the store records and computes the one a
// restore with cfg creates: the Store and New of a RestoreCluster.
func RestoreClusterFor(ctx context.Context, store *snapstore.Store, cfg *embed.Config) (RestoreCluster, error) {
	var rc RestoreCluster
	id, ok, err := store.ClusterID(ctx)
	if err != nil {
		return rc, err
	}
	if ok {
		rc.Store = id
	}
	if rc.New, err = embedded.ClusterIDFor(cfg); err != nil {
		return rc, err
	}
	return rc, nil
}

// FollowRestore records the cluster of the data dir just restored for cfg as the
// store's, replacing from (snapstore.Store.ReclaimClusterID; the old ID is kept
// in the record's history). It returns the new cluster ID. Call it only after a
// restore that CheckRestoreCluster let the store follow.
func FollowRestore(ctx context.Context, store *snapstore.Store, cfg *embed.Config, from string) (string, error) {
	id, err := datadir.DataDirIdentity(cfg.Dir, cfg.WalDir)
	if err != nil {
		return "", fmt.Errorf("record the restored cluster in the store: %w", err)
	}
	if id.ClusterID == from {
		return id.ClusterID, nil
	}
	if err := store.ReclaimClusterID(ctx, id.ClusterID, from); err != nil {
		return id.ClusterID, err
	}
	return id.ClusterID, nil
}

// followRestore is FollowRestore once, bounded by followTimeout; when it fails,
// the first claim of the store after etcd started does it (reclaimFrom).
func (s *Supervisor) followRestore(ctx context.Context, from string) {
	fctx, cancel := context.WithTimeout(ctx, followTimeout)
	defer cancel()
	id, err := FollowRestore(fctx, s.cfg.Store, s.cfg.Etcd, from)
	switch {
	case err == nil:
		s.lg.Warn("the restore created another cluster ID; the store now belongs to it (the old one is kept in its record's history)",
			"store", s.cfg.Store.URL(), "cluster", id, "previous_cluster", from)
		s.mu.Lock()
		s.storeCluster = id
		s.mu.Unlock()
	case errors.Is(err, snapstore.ErrClusterMismatch):
		s.lg.Error("the restore created another cluster ID, but the store's record names a third cluster: it was left as it is, "+
			"and this member takes no backups into it", "store", s.cfg.Store.URL(), "cluster", id, "previous_cluster", from, "err", err)
	default:
		s.lg.Warn("could not record the restored cluster in the store yet; the first backup records it",
			"store", s.cfg.Store.URL(), "cluster", id, "previous_cluster", from, "err", err)
		s.mu.Lock()
		s.reclaimFrom = from
		s.mu.Unlock()
	}
}

// clusterID is etcd's cluster ID in the hex form the store records.
func clusterID(e *embedded.Etcd) string {
	return e.Server().Cluster().ID().String()
}

// claimed reports whether the store was claimed for e's cluster since e started.
func (s *Supervisor) claimed(e *embedded.Etcd) bool {
	id := clusterID(e)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.claimedFor == id
}

// claimStore makes sure the store records e's cluster before a backup of it is
// uploaded: it claims the store (or, after a restore that created another
// cluster ID, moves its record to it) once per run of etcd, and with verify it
// reads the record again even then (before each full snapshot: a record given to
// another cluster meanwhile stops the backups). A store of another cluster gives
// an error wrapping snapstore.ErrClusterMismatch, recorded for status, readiness
// and metrics and logged once; other errors are store errors, to retry.
func (s *Supervisor) claimStore(ctx context.Context, e *embedded.Etcd, verify bool) error {
	id := clusterID(e)
	s.claimMu.Lock()
	defer s.claimMu.Unlock()
	s.mu.Lock()
	done, from := s.claimedFor == id, s.reclaimFrom
	s.mu.Unlock()
	store := s.cfg.Store
	var err error
	switch {
	case done && !verify:
		return nil
	case !done && from != "" && from != id:
		err = store.ReclaimClusterID(ctx, id, from)
	default: // also when done, verifying: a record removed meanwhile is written again
		err = store.ClaimClusterID(ctx, id)
	}
	switch {
	case err == nil:
		s.claimSucceeded(id, from)
		return nil
	case errors.Is(err, snapstore.ErrClusterMismatch):
		return s.claimRefused(ctx, id, err)
	case ctx.Err() != nil:
		return err
	}
	s.metrics.storeErrors.WithLabelValues(storeOpClaim).Inc()
	s.storeResult(err)
	return fmt.Errorf("claim the store for cluster %s before backing it up: %w", id, err)
}

// claimSucceeded records that the store belongs to cluster id.
func (s *Supervisor) claimSucceeded(id, from string) {
	s.mu.Lock()
	wasRefused := s.mismatch != ""
	first := s.claimedFor != id
	s.claimedFor, s.storeCluster, s.mismatch, s.reclaimFrom = id, id, "", ""
	s.mu.Unlock()
	s.metrics.clusterMismatch.Set(0)
	s.storeResult(nil)
	switch {
	case from != "" && from != id && first:
		s.lg.Warn("the store now belongs to this member's cluster, which a restore created (the old one is kept in its record's history)",
			"store", s.cfg.Store.URL(), "cluster", id, "previous_cluster", from)
	case wasRefused:
		s.lg.Info("the store belongs to this member's cluster now: backups resume", "store", s.cfg.Store.URL(), "cluster", id)
	case first:
		s.lg.Debug("the store belongs to this member's cluster", "store", s.cfg.Store.URL(), "cluster", id)
	}
}

// claimRefused records that the store belongs to another cluster than id (err
// says which) and returns the error to report.
func (s *Supervisor) claimRefused(ctx context.Context, id string, err error) error {
	other := "another cluster"
	have, _, rerr := s.cfg.Store.ClusterID(ctx)
	if rerr == nil && have != "" {
		other = "cluster " + have
	}
	msg := fmt.Sprintf("the store %s belongs to %s, this member to cluster %s: no backups are taken (full or delta), "+
		"so that the backups of two clusters never mix in one store. Give this cluster its own store (another --store prefix); "+
		"if this cluster replaced %s (restored from its backups with other peer URLs or another token), move %s out of the store's "+
		"prefix and the next backup records this cluster",
		s.cfg.Store.URL(), other, id, other, snapstore.ClusterIDKey)
	s.mu.Lock()
	logged := s.mismatch != ""
	s.claimedFor, s.mismatch = "", msg
	if rerr == nil && have != "" {
		s.storeCluster = have
	}
	s.mu.Unlock()
	s.metrics.clusterMismatch.Set(1)
	s.recordError("backup", errors.New(msg))
	if !logged {
		s.lg.Error("refusing to back up into the store of another cluster", "store", s.cfg.Store.URL(),
			"store_cluster", have, "cluster", id, "reason", msg, "err", err)
	}
	return clusterError(msg)
}

// waitClaim waits until this member leads and the store is claimed for its
// cluster, retrying store errors with backoff and reading a store of another
// cluster again every claimRecheck. It returns false when ctx ended first.
func (s *Supervisor) waitClaim(ctx context.Context, e *embedded.Etcd, lg *slog.Logger) bool {
	srv := e.Server()
	retry := backoff.Backoff{Min: claimRetryMin, Max: claimRetryMax}
	for {
		var wait time.Duration
		if srv.Leader() != srv.MemberID() { // a follower uploads nothing, and claims nothing
			wait = leaderPoll
		} else if err := s.claimStore(ctx, e, false); err == nil {
			return true
		} else {
			switch {
			case ctx.Err() != nil:
				return false
			case errors.Is(err, snapstore.ErrClusterMismatch):
				wait = claimRecheck
			default:
				wait = retry.Next()
				lg.Warn("cannot claim the store; no delta snapshot until it can", "err", err, "retry_in", wait)
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-srv.LeaderChangedNotify():
		case <-time.After(wait):
		}
	}
}

// checkRestoreCluster checks, before a restore while running touches anything,
// that the cluster the restore creates from the member's configuration may use
// the store: it is the store's cluster, or the running member (cluster running)
// is, and the store then follows the restored member (its peer URLs or token
// changed since it was created). It returns the cluster to replace in the store's
// record after the restore ("" none); a store of another cluster is refused with
// an error wrapping snapstore.ErrClusterMismatch.
func (s *Supervisor) checkRestoreCluster(ctx context.Context, running string) (follow string, err error) {
	rc, err := RestoreClusterFor(ctx, s.cfg.Store, s.cfg.Etcd)
	if err != nil {
		return "", fmt.Errorf("restore: %w", err)
	}
	rc.Replaced = running
	ok, err := CheckRestoreCluster(rc)
	if err != nil {
		return "", clusterError(fmt.Sprintf("restore refused: the store %s belongs to cluster %s, this member to cluster %s, "+
			"and the restore would create cluster %s: the backups of another cluster are not restored over a running member; "+
			"nothing was changed. Give this member its own store, or, to replace it with the store's data anyway, "+
			"stop etcdbr and start it with --force-restore (the data dir is kept aside)",
			s.cfg.Store.URL(), rc.Store, running, rc.New))
	}
	if ok {
		return rc.Store, nil
	}
	return "", nil
}
