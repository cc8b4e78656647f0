package supervisor

import (
	"fmt"
	"strings"
	"time"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// The readiness checks.
const (
	// checkEtcd: etcd serves, with a leader, without an alarm, the cluster has quorum, and the
	// data dir's file system has room (guardDisk).
	checkEtcd = "etcd"
	// checkVoter: this member is a voter (not a learner) that has caught up with the leader.
	checkVoter = "voter"
	// checkBackup: no write has waited longer than the maximum backup age to reach the
	// store, the store holds a full snapshot, and it belongs to this member's cluster.
	checkBackup = "backup"
)

// Check is the outcome of one readiness check.
type Check struct {
	Name    string `json:"name"`
	OK      bool   `json:"ok"`
	Message string `json:"message"`
}

// Readiness runs the readiness checks: "etcd" (etcd serves, has a leader, and no alarm, the
// cluster has quorum as this member sees it, and the data dir's file system has room), "voter" (this member is a voter that has
// caught up with the leader: cluster.go) and "backup" (the store belongs to this member's
// cluster and holds a full snapshot, and no write has waited longer than MaxBackupAge to
// reach the store; an idle member whose store holds its revision passes whatever the age of
// its newest backup).
func (s *Supervisor) Readiness() []Check {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readinessLocked(time.Now())
}

// readinessLocked runs the readiness checks. s.mu is held.
func (s *Supervisor) readinessLocked(now time.Time) []Check {
	return readiness(s.viewLocked(), now, s.cfg.MaxBackupAge)
}

// readiness runs the readiness checks on v, in the order /readyz shows them.
func readiness(v memberView, now time.Time, maxBackupAge time.Duration) []Check {
	return []Check{etcdCheck(v), voterCheck(v), withDamage(backupCheck(v, now, maxBackupAge), v)}
}

// withDamage adds to a passing backup check what the store cannot give back: the revisions
// the restore at start lost, and the objects the store records as damaged. The check does
// not fail for them (docs/api.md, "Damaged backups"): the member serves the newest data
// the store can prove and backs it up; failing it would take the member out of service and
// bring no revision back. The metrics etcdbr_restore_lost_revisions and
// etcdbr_store_damaged_objects are what to alert on.
func withDamage(c Check, v memberView) Check {
	if !c.OK {
		return c
	}
	if sf := v.validation.Shortfall; sf != nil {
		c.Message += fmt.Sprintf("; the restore at start reached revision %d, not the store's newest %d: %d revisions were lost "+
			"(%s failed verification)", sf.Revision, sf.StoreRevision, sf.LostRevisions, strings.Join(sf.Damaged, ", "))
	}
	if n := len(v.health.damaged); n > 0 {
		keys := make([]string, 0, 3)
		for _, d := range v.health.damaged[:min(n, 3)] {
			keys = append(keys, d.Key)
		}
		more := ""
		if n > len(keys) {
			more = fmt.Sprintf(" and %d more", n-len(keys))
		}
		c.Message += fmt.Sprintf("; the store records %d damaged object(s) (%s%s): restores leave them out; replace them from a copy "+
			"and remove their records under %s", n, strings.Join(keys, ", "), more, snapstore.DamagePrefix)
	}
	return c
}

// memberView is what the readiness checks and the status read: the lifecycle, health and the
// claim, copied at one moment (viewLocked). It is used while the Supervisor's mutex is still
// held, so that its etcd is not closed meanwhile.
type memberView struct {
	state      State
	since      time.Time
	etcd       *embedded.Etcd // nil unless starting or serving
	restore    *RestoreStatus // the restore running, or the last one (nil: none yet)
	validation ValidationStatus
	lastErr    *ErrorStatus
	health     healthView
	cluster    clusterView // of etcd (no probe while etcd is nil)
	// storeCluster and mismatch are the claim's (storeClaim.clusters).
	storeCluster, mismatch string
	// disk is the data dir's file system (guardDisk).
	disk diskView
	// repair is the command that restores the whole cluster from the store, for a person
	// who sees the quorum lost for good.
	repair string
}

// viewLocked copies what the status and the readiness checks read. s.mu is held.
func (s *Supervisor) viewLocked() memberView {
	v := memberView{state: s.state, since: s.stateSince, etcd: s.etcd, validation: s.validation, lastErr: s.lastErr,
		health: s.health.view(), cluster: s.cluster.view(s.etcd), disk: s.disk}
	if s.job != nil {
		r := s.job.statusLocked()
		v.restore = &r
	}
	v.storeCluster, v.mismatch = s.claim.clusters()
	v.repair = s.repairCommand()
	return v
}

// etcdCheck is the "etcd" readiness check.
func etcdCheck(v memberView) Check {
	c := Check{Name: checkEtcd}
	switch {
	case v.state != StateServing || v.etcd == nil:
		c.Message = "etcd is not serving: the supervisor is " + string(v.state)
		if v.restore != nil && v.restore.Running {
			c.Message += " (restore phase " + v.restore.Phase + ")"
		}
	case v.etcd.Server().Leader() == 0:
		c.Message = "etcd has no leader: the cluster is electing one, or has lost its quorum"
		if v.cluster.probe != nil {
			c.Message += " (" + v.cluster.quorumWhy + ")"
			if !v.cluster.quorum {
				c.Message += "; if the members that do not answer will not come back, restore the whole cluster from the store: " + v.repair
			}
		}
	case v.cluster.probe == nil:
		c.Message = "the cluster's quorum was not checked yet since etcd started"
	case !v.cluster.quorum:
		c.Message = fmt.Sprintf("the cluster has no quorum, as this member sees it, since %s: %s; if the members that do not answer "+
			"will not come back, restore the whole cluster from the store: %s",
			v.cluster.quorumSince.UTC().Format(time.RFC3339), v.cluster.quorumWhy, v.repair)
	case v.disk.full:
		c.Message = diskMessage(v.disk)
	case len(v.health.alarms) > 0:
		c.Message = "etcd raised an alarm: " + strings.Join(v.health.alarms, ", ") +
			" (CORRUPT: restore with POST /v1/restore, or run with --restore-on-corrupt; NOSPACE: compact, defragment and disarm)"
	default:
		c.OK = true
		c.Message = fmt.Sprintf("etcd serves at revision %d", v.health.revision)
	}
	return c
}

// voterCheck is the "voter" readiness check: this member is a voter that has caught up with
// the leader (caughtUpCheck).
func voterCheck(v memberView) Check {
	if v.state != StateServing || v.etcd == nil {
		return Check{Name: checkVoter, Message: "etcd is not serving: the supervisor is " + string(v.state)}
	}
	return caughtUpCheck(v.cluster)
}

// backupCheck is the "backup" readiness check: writes may wait maxAge to reach the store.
func backupCheck(v memberView, now time.Time, maxAge time.Duration) Check {
	c := Check{Name: checkBackup}
	h := v.health
	storeErr := ""
	switch {
	case h.store.known && !h.store.reachable:
		storeErr = "; the store failed: " + h.store.err
	case h.upload != "":
		// The store answers (the prober's listing passed since) but refused the last upload.
		storeErr = "; the last upload failed: " + h.upload
	}
	switch {
	case v.state != StateServing || v.etcd == nil:
		c.Message = "backups run only while etcd serves"
		return c
	case v.etcd.Server().Leader() == 0:
		c.OK = true
		c.Message = "this member knows no leader: the leader takes the backups, once there is one"
		return c
	case v.etcd.Server().Leader() != v.etcd.Server().MemberID():
		c.OK = true
		c.Message = fmt.Sprintf("this member is not the leader (%s): the leader takes the backups", v.etcd.Server().Leader())
		return c
	case v.mismatch != "":
		c.Message = v.mismatch
		return c
	}
	full, ok := h.newest[catalog.KindFull]
	if !ok {
		c.Message = "the store holds no full snapshot yet" + storeErr
		return c
	}
	if sf := v.validation.Shortfall; sf != nil && full.Revision < sf.DataRevision {
		c.Message = fmt.Sprintf("the restore at start reached revision %d, not the store's newest %d: %s failed verification and "+
			"%d revisions are lost; no full snapshot of the restored data is in the store yet%s",
			sf.Revision, sf.StoreRevision, strings.Join(sf.Damaged, ", "), sf.LostRevisions, storeErr)
		return c
	}
	backedUp := h.backedUp
	if h.unbacked.IsZero() {
		c.OK = true
		c.Message = fmt.Sprintf("the store holds etcd's revision %d (newest full snapshot at revision %d)", backedUp, full.Revision)
		return c
	}
	age := now.Sub(h.unbacked)
	c.OK = age <= maxAge
	verb := "have waited"
	if !c.OK {
		verb = "have waited longer than --max-backup-age"
	}
	c.Message = fmt.Sprintf("writes after revision %d (up to %d) are not in the store: they %s %s (max %s)%s",
		backedUp, h.revision, verb, age.Round(time.Second), maxAge, storeErr)
	return c
}
