package supervisor

import "github.com/etcdbr/etcdbr/snapstore/catalog"

// corruptState follows one CORRUPT alarm: from when the monitor first sees it until it sees
// etcd without it. The monitor's goroutine owns it.
type corruptState struct {
	raised        bool
	restored      bool // a restore was started for it: not again while it lasts
	reportedAgain bool // the alarm outlived the restore, and the log said so
}

// checkCorrupt acts on the monitor's view of the CORRUPT alarm. Without RestoreOnCorrupt it
// reports the alarm (the log, readiness, status and etcdbr_etcd_alarm do); with it, on a
// single-member cluster, it restores the newest backup once per alarm: if the restored
// member raises it again, it is only reported.
func (s *Supervisor) checkCorrupt(cs *corruptState, raised bool) {
	st := *cs
	first := raised && !st.raised
	alarms := s.health.view().alarms
	switch {
	case !raised:
		*cs = corruptState{}
	case first:
		*cs = corruptState{raised: true}
	case st.restored:
		cs.reportedAgain = true
	}
	switch {
	case !raised:
		if st.raised {
			s.lg.Info("etcd's CORRUPT alarm is gone")
		}
	case !s.cfg.RestoreOnCorrupt:
		if first {
			s.lg.Error("etcd raised a CORRUPT alarm: its data may be corrupt and it refuses writes; full snapshots are suspended. "+
				"Restore it with POST /v1/restore, or run etcdbr with --restore-on-corrupt to restore automatically",
				"alarms", alarms)
		}
	case s.clusterMembers() > 1:
		if first {
			s.lg.Error("etcd raised a CORRUPT alarm in a cluster of several members: a member is repaired from its peers, not from a backup; "+
				"etcdbr does not restore it: stop the corrupt member, move its data dir away and start it again, and etcdbr rejoins it through etcd's learner path",
				"members", s.clusterMembers(), "alarms", alarms)
		}
	case st.restored:
		if !st.reportedAgain {
			s.lg.Error("etcd raised the CORRUPT alarm again after a restore from the newest backup: not restoring again; "+
				"check the backups (etcdbr verify) and restore an older point with POST /v1/restore", "alarms", alarms)
		}
	default:
		cs.restored = s.restoreOnCorrupt(alarms)
	}
}

// restoreOnCorrupt starts a restore of the newest backup, the same path as POST /v1/restore.
// The request fails while etcd is not serving or a restore runs: the next sample tries again.
// It reports whether the restore started.
func (s *Supervisor) restoreOnCorrupt(alarms []string) bool {
	job, err := s.startRestore(catalog.Target{}, TriggerCorrupt)
	if err != nil {
		s.lg.Warn("etcd raised a CORRUPT alarm; the restore cannot start yet", "err", err)
		return false
	}
	s.lg.Error("etcd raised a CORRUPT alarm: restoring the newest backup (--restore-on-corrupt)", "restore_id", job.id, "alarms", alarms)
	return true
}
