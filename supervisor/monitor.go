package supervisor

import (
	"context"
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// monitorInterval is how often the monitor samples etcd's revision and alarms.
const monitorInterval = time.Second

// monitor samples etcd every monitorInterval until ctx ends: the free space of the data dir's
// file system (a full one raises etcd's NOSPACE alarm: guardDisk), its revision (for the lag
// and the age of the writes not in the store) and its alarms (a CORRUPT alarm may restore). Run
// runs it on a goroutine of its own from start to end; the state of the CORRUPT alarm and of
// the data dir's file system it follows is that goroutine's alone.
func (s *Supervisor) monitor(ctx context.Context) {
	tick := time.NewTicker(monitorInterval)
	defer tick.Stop()
	var corrupt corruptState
	var disk diskGuard
	for {
		s.guardDisk(ctx, &disk, time.Now())
		s.sample(time.Now(), &corrupt)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// sample reads etcd's revision and alarms, updates what depends on them, and acts on a
// CORRUPT alarm (cs follows it).
func (s *Supervisor) sample(now time.Time, cs *corruptState) {
	if corrupt, serving := s.refresh(now); serving {
		s.checkCorrupt(cs, corrupt)
	}
}

// refresh reads etcd's revision and alarms into health and updates the readiness and cluster
// metrics (also before every scrape of /metrics). It reports whether etcd serves and has a CORRUPT
// alarm.
func (s *Supervisor) refresh(now time.Time) (corrupt, serving bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	serving = s.etcd != nil && s.state == StateServing
	var smp *etcdSample
	if serving {
		srv := s.etcd.Server()
		alarms := srv.Alarms()
		smp = &etcdSample{leader: srv.Leader() == srv.MemberID(), revision: srv.KV().Rev(), alarms: alarms}
		corrupt = hasCorruptAlarm(alarms)
	}
	s.health.sample(now, smp)
	v := s.viewLocked()
	for _, c := range readiness(v, now, s.cfg.MaxBackupAge) {
		s.metrics.ready.WithLabelValues(c.Name).Set(boolGauge(c.OK))
	}
	s.metrics.cluster(v.cluster, serving, now)
	return corrupt, serving
}

// hasCorruptAlarm reports whether alarms hold a CORRUPT alarm of a member: the freeze of a
// cluster restore is not one (isFreeze).
func hasCorruptAlarm(alarms []*pb.AlarmMember) bool {
	for _, a := range alarms {
		if a.Alarm == pb.AlarmType_CORRUPT && !isFreeze(a) {
			return true
		}
	}
	return false
}

func hasAlarm(alarms []*pb.AlarmMember, typ pb.AlarmType) bool {
	for _, a := range alarms {
		if a.Alarm == typ {
			return true
		}
	}
	return false
}

// alarmNames describes alarms: "CORRUPT (member 8e9e05c52164694d)".
func alarmNames(alarms []*pb.AlarmMember) []string {
	var out []string
	for _, a := range alarms {
		if isFreeze(a) {
			out = append(out, "CORRUPT (etcdbr's freeze of a cluster restore: writes refused until the members restore)")
			continue
		}
		out = append(out, fmt.Sprintf("%s (member %x)", a.Alarm, a.MemberID))
	}
	return out
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
