package supervisor

import (
	"fmt"
	"strings"
	"time"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// The readiness checks.
const (
	// checkEtcd: etcd serves, with a leader, without an alarm.
	checkEtcd = "etcd"
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

// Readiness runs the readiness checks: "etcd" (etcd serves, has a leader, and no alarm) and "backup"
// (the store belongs to this member's cluster and holds a full snapshot, and no write has
// waited longer than MaxBackupAge to reach the store; an idle member whose store holds its
// revision passes whatever the age of its newest backup).
func (s *Supervisor) Readiness() []Check {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readinessLocked(time.Now())
}

func (s *Supervisor) readinessLocked(now time.Time) []Check {
	return []Check{s.etcdCheckLocked(), s.backupCheckLocked(now)}
}

func (s *Supervisor) etcdCheckLocked() Check {
	c := Check{Name: checkEtcd}
	switch {
	case s.state != StateServing || s.etcd == nil:
		c.Message = "etcd is not serving: the supervisor is " + string(s.state)
		if s.job != nil && s.job.running() {
			c.Message += " (restore phase " + string(s.job.phase) + ")"
		}
	case s.etcd.Server().Leader() == 0:
		c.Message = "etcd has no leader: the cluster is electing one, or has lost its quorum"
	case len(s.alarms) > 0:
		c.Message = "etcd raised an alarm: " + strings.Join(s.alarms, ", ") +
			" (CORRUPT: restore with POST /v1/restore, or run with --restore-on-corrupt; NOSPACE: compact, defragment and disarm)"
	default:
		c.OK = true
		c.Message = fmt.Sprintf("etcd serves at revision %d", s.revision)
	}
	return c
}

func (s *Supervisor) backupCheckLocked(now time.Time) Check {
	c := Check{Name: checkBackup}
	storeErr := ""
	if s.store.known && !s.store.reachable {
		storeErr = "; the store failed: " + s.store.err
	}
	switch {
	case s.state != StateServing || s.etcd == nil:
		c.Message = "backups run only while etcd serves"
		return c
	case s.etcd.Server().Leader() != s.etcd.Server().MemberID():
		c.OK = true
		c.Message = fmt.Sprintf("this member is not the leader (%s): the leader takes the backups", s.etcd.Server().Leader())
		return c
	case s.mismatch != "":
		c.Message = s.mismatch
		return c
	}
	full, ok := s.newest[catalog.KindFull]
	if !ok {
		c.Message = "the store holds no full snapshot yet" + storeErr
		return c
	}
	if sf := s.validation.Shortfall; sf != nil && full.Revision < sf.DataRevision {
		c.Message = fmt.Sprintf("the restore at start reached revision %d, not the store's newest %d: %s failed verification and "+
			"%d revisions are lost; no full snapshot of the restored data is in the store yet%s",
			sf.Revision, sf.StoreRevision, strings.Join(sf.Damaged, ", "), sf.LostRevisions, storeErr)
		return c
	}
	backedUp := s.backedUpLocked()
	if s.unbacked.IsZero() {
		c.OK = true
		c.Message = fmt.Sprintf("the store holds etcd's revision %d (newest full snapshot at revision %d)", backedUp, full.Revision)
		return c
	}
	age := now.Sub(s.unbacked)
	c.OK = age <= s.cfg.MaxBackupAge
	verb := "have waited"
	if !c.OK {
		verb = "have waited longer than --max-backup-age"
	}
	c.Message = fmt.Sprintf("writes after revision %d (up to %d) are not in the store: they %s %s (max %s)%s",
		backedUp, s.revision, verb, age.Round(time.Second), s.cfg.MaxBackupAge, storeErr)
	return c
}
