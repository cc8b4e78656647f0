package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/internal/backoff"
	"github.com/etcdbr/etcdbr/snapstore"
)

// A store belongs to one etcd cluster: the store's cluster record
// (snapstore.ClusterIDKey) names it. The leader claims the store before its first
// upload of every run of etcd (storeClaim): a store of another cluster gets no
// backup, full or delta, and health, status and metrics say why. A restore checks,
// before it touches anything, that the cluster it creates (from the etcd
// configuration: embedded.ClusterIDFor) may use the store: CheckRestoreCluster.

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
	// OwnerGone: the store's cluster stopped writing to the store and the restore is
	// a new machine's (a single member with a missing data dir: DecideTakeover); it
	// restores, and the store then records New, as with Force.
	OwnerGone bool
	// Owner is what is known of whether the store's cluster still writes to the
	// store (DecideTakeover's reason; "" when not asked): added to a refusal.
	Owner string
}

// CheckRestoreCluster decides whether a restore may go ahead, and whether the
// store's record then moves to the new cluster (follow). It does no I/O.
//
// A restore that creates the store's own cluster, or uses a store that records
// none, goes ahead. One that creates another cluster (other peer URLs or another
// initial cluster token than those of the cluster that took the backups) goes
// ahead and the store follows it when the data it replaces belonged to the
// store's cluster (the same single member, whose peer URLs or token changed),
// when the store's cluster stopped writing to it (OwnerGone: a new machine takes
// it over) or with Force; it goes ahead without touching the record with Keep; otherwise it
// is refused with an error wrapping snapstore.ErrClusterMismatch that names both
// clusters, the likely cause and the fixes.
func CheckRestoreCluster(c RestoreCluster) (follow bool, err error) {
	switch {
	case c.Store == "" || c.New == "" || c.New == c.Store:
		return false, nil
	case c.Keep:
		return false, nil
	case c.Force || c.OwnerGone || c.Replaced == c.Store:
		return true, nil
	}
	owner := ""
	if c.Owner != "" {
		owner = "; " + c.Owner
	}
	return false, clusterError(fmt.Sprintf("the store belongs to cluster %s, but a restore with this etcd configuration creates cluster %s: "+
		"its peer URLs (--initial-cluster, --initial-advertise-peer-urls) or --initial-cluster-token differ from those of the cluster "+
		"that took the backups; nothing was changed. If the new cluster replaces the old one, restore with --force-restore: "+
		"the store then belongs to cluster %s and its backups continue the store's; otherwise give this cluster its own store "+
		"(another prefix), or the initial cluster and token of the cluster that took the backups%s",
		c.Store, c.New, c.New, owner))
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
	id, err := datadir.ReadIDs(cfg.Dir, cfg.WalDir)
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

// storeClaim is the member's claim of the store: it records the member's cluster in the
// store's cluster record before the first upload of every run of etcd, moves the record to
// the cluster a restore created, and refuses the backups when the record names another
// cluster.
//
// New creates it; it lives as long as the Supervisor, with nothing to start or stop. The
// full snapshot runner (before each full snapshot: verify), the delta taker (wait, before its
// first delta), Run (before it records a new history) and a restore while running (before
// the fresh full snapshot) claim; the lifecycle forgets the claim when etcd stops (forget),
// since the next etcd may be another cluster.
type storeClaim struct {
	// Set by newStoreClaim, read-only after.
	store   *snapstore.Store
	etcd    *embed.Config // the member's configuration: the cluster a restore creates
	lg      *slog.Logger
	metrics *metrics
	health  *health // told what each claim said of the store
	// recordError keeps a refusal as the last error of the status (Supervisor.recordError).
	recordError func(component string, err error)

	// serial serializes the claims: one read and write of the record at a time. It is held
	// across the store's I/O, and taken before mu and before the mutexes of the Supervisor
	// and of health (recordError, health.storeResult).
	serial sync.Mutex
	// mu guards the fields below. A leaf: nothing else is locked while it is held.
	mu           sync.Mutex
	claimedFor   string // the cluster the store was claimed for since etcd started ("" none yet)
	reclaimFrom  string // after a restore that created another cluster: the record to replace at the first claim
	storeCluster string // the cluster the store records, as last read ("" unknown or none)
	mismatch     string // why no backups are taken: the store belongs to another cluster ("" none)
}

// newStoreClaim returns the claim of store for the member configured by etcd.
func newStoreClaim(store *snapstore.Store, etcd *embed.Config, lg *slog.Logger, m *metrics, h *health,
	recordError func(string, error)) *storeClaim {
	return &storeClaim{store: store, etcd: etcd, lg: lg, metrics: m, health: h, recordError: recordError}
}

// clusters returns the cluster the store records, as last read ("" unknown or none), and why
// no backups are taken ("" when they are).
func (c *storeClaim) clusters() (storeCluster, mismatch string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.storeCluster, c.mismatch
}

// setStoreCluster records that the store records cluster id, as read at start.
func (c *storeClaim) setStoreCluster(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.storeCluster = id
}

// reclaimAt makes the first claim replace the record of cluster from (a restore or a new
// member created another cluster than the store records).
func (c *storeClaim) reclaimAt(from string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reclaimFrom = from
}

// forget forgets the claim (etcd stops): the next etcd, whose cluster a restore may change,
// claims again.
func (c *storeClaim) forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.claimedFor = ""
}

// follow is FollowRestore once, bounded by followTimeout; when it fails, the first
// claim of the store after etcd started does it (reclaimFrom).
func (c *storeClaim) follow(ctx context.Context, from string) {
	fctx, cancel := context.WithTimeout(ctx, followTimeout)
	defer cancel()
	id, err := FollowRestore(fctx, c.store, c.etcd, from)
	switch {
	case err == nil:
		c.lg.Warn("the restore created another cluster ID; the store now belongs to it (the old one is kept in its record's history)",
			"store", c.store.URL(), "cluster", id, "previous_cluster", from)
		c.setStoreCluster(id)
	case errors.Is(err, snapstore.ErrClusterMismatch):
		c.lg.Error("the restore created another cluster ID, but the store's record names a third cluster: it was left as it is, "+
			"and this member takes no backups into it", "store", c.store.URL(), "cluster", id, "previous_cluster", from, "err", err)
	default:
		c.lg.Warn("could not record the restored cluster in the store yet; the first backup records it",
			"store", c.store.URL(), "cluster", id, "previous_cluster", from, "err", err)
		c.reclaimAt(from)
	}
}

// clusterID is etcd's cluster ID in the hex form the store records.
func clusterID(e *embedded.Etcd) string {
	return e.Server().Cluster().ID().String()
}

// claimed reports whether the store was claimed for e's cluster since e started.
func (c *storeClaim) claimed(e *embedded.Etcd) bool {
	id := clusterID(e)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.claimedFor == id
}

// claim makes sure the store records e's cluster before a backup of it is
// uploaded: it claims the store (or, after a restore that created another
// cluster ID, moves its record to it) once per run of etcd, and with verify it
// reads the record again even then (before each full snapshot: a record given to
// another cluster meanwhile stops the backups). A store of another cluster gives
// an error wrapping snapstore.ErrClusterMismatch, recorded for status, readiness
// and metrics and logged once; other errors are store errors, to retry.
func (c *storeClaim) claim(ctx context.Context, e *embedded.Etcd, verify bool) error {
	id := clusterID(e)
	c.serial.Lock()
	defer c.serial.Unlock()
	c.mu.Lock()
	done, from := c.claimedFor == id, c.reclaimFrom
	c.mu.Unlock()
	store := c.store
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
		c.succeeded(id, from)
		return nil
	case errors.Is(err, snapstore.ErrClusterMismatch):
		return c.refused(ctx, id, err)
	case ctx.Err() != nil:
		return err
	}
	c.metrics.storeErrors.WithLabelValues(storeOpClaim).Inc()
	c.health.storeResult(err)
	return fmt.Errorf("claim the store for cluster %s before backing it up: %w", id, err)
}

// succeeded records that the store belongs to cluster id.
func (c *storeClaim) succeeded(id, from string) {
	c.mu.Lock()
	wasRefused := c.mismatch != ""
	first := c.claimedFor != id
	c.claimedFor, c.storeCluster, c.mismatch, c.reclaimFrom = id, id, "", ""
	c.mu.Unlock()
	c.metrics.clusterMismatch.Set(0)
	c.health.storeResult(nil)
	switch {
	case from != "" && from != id && first:
		c.lg.Warn("the store now belongs to this member's cluster, which a restore created (the old one is kept in its record's history)",
			"store", c.store.URL(), "cluster", id, "previous_cluster", from)
	case wasRefused:
		c.lg.Info("the store belongs to this member's cluster now: backups resume", "store", c.store.URL(), "cluster", id)
	case first:
		c.lg.Debug("the store belongs to this member's cluster", "store", c.store.URL(), "cluster", id)
	}
}

// refused records that the store belongs to another cluster than id (err says
// which) and returns the error to report.
func (c *storeClaim) refused(ctx context.Context, id string, err error) error {
	other := "another cluster"
	have, _, rerr := c.store.ClusterID(ctx)
	if rerr == nil && have != "" {
		other = "cluster " + have
	}
	msg := fmt.Sprintf("the store %s belongs to %s, this member to cluster %s: no backups are taken (full or delta), "+
		"so that the backups of two clusters never mix in one store. Give this cluster its own store (another --store prefix); "+
		"if this cluster replaced %s (restored from its backups with other peer URLs or another token), move %s out of the store's "+
		"prefix and the next backup records this cluster",
		c.store.URL(), other, id, other, snapstore.ClusterIDKey)
	c.mu.Lock()
	logged := c.mismatch != ""
	c.claimedFor, c.mismatch = "", msg
	if rerr == nil && have != "" {
		c.storeCluster = have
	}
	c.mu.Unlock()
	c.metrics.clusterMismatch.Set(1)
	c.recordError("backup", errors.New(msg))
	if !logged {
		c.lg.Error("refusing to back up into the store of another cluster", "store", c.store.URL(),
			"store_cluster", have, "cluster", id, "reason", msg, "err", err)
	}
	return clusterError(msg)
}

// wait waits until this member leads and the store is claimed for its cluster,
// retrying store errors with backoff and reading a store of another cluster again
// every claimRecheck. It returns false when ctx ended first.
func (c *storeClaim) wait(ctx context.Context, e *embedded.Etcd, lg *slog.Logger) bool {
	srv := e.Server()
	retry := backoff.Backoff{Min: claimRetryMin, Max: claimRetryMax}
	for {
		var wait time.Duration
		if srv.Leader() != srv.MemberID() { // a follower uploads nothing, and claims nothing
			wait = leaderPoll
		} else if err := c.claim(ctx, e, false); err == nil {
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

// checkRestore checks, before a restore while running touches anything,
// that the cluster the restore creates from the member's configuration may use
// the store: it is the store's cluster, or the running member (cluster running)
// is, and the store then follows the restored member (its peer URLs or token
// changed since it was created). It returns the cluster to replace in the store's
// record after the restore ("" none); a store of another cluster is refused with
// an error wrapping snapstore.ErrClusterMismatch.
func (c *storeClaim) checkRestore(ctx context.Context, running string) (follow string, err error) {
	rc, err := RestoreClusterFor(ctx, c.store, c.etcd)
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
			c.store.URL(), rc.Store, running, rc.New))
	}
	if ok {
		return rc.Store, nil
	}
	return "", nil
}
