package supervisor

import (
	"context"
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// monitorInterval is how often the monitor samples etcd's revision and alarms.
const monitorInterval = time.Second

// monitor samples etcd every monitorInterval until ctx ends: its revision (for the lag and
// the age of the writes not in the store) and its alarms (a CORRUPT alarm may restore).
func (s *Supervisor) monitor(ctx context.Context) {
	tick := time.NewTicker(monitorInterval)
	defer tick.Stop()
	for {
		s.sample(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// sample reads etcd's revision and alarms, updates what depends on them, and acts on a
// CORRUPT alarm.
func (s *Supervisor) sample(now time.Time) {
	if corrupt, serving := s.refresh(now); serving {
		s.checkCorrupt(corrupt)
	}
}

// refresh reads etcd's revision and alarms and updates the status and the metrics that
// depend on them (also before every scrape of /metrics). It reports whether etcd serves and
// has a CORRUPT alarm.
func (s *Supervisor) refresh(now time.Time) (corrupt, serving bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	serving = s.etcd != nil && s.state == StateServing
	leader := true
	if serving {
		srv := s.etcd.Server()
		leader = srv.Leader() == srv.MemberID()
		s.revision = srv.KV().Rev()
		alarms := srv.Alarms()
		s.alarms = alarmNames(alarms)
		corrupt = hasCorruptAlarm(alarms)
		s.metrics.alarm.WithLabelValues("corrupt").Set(boolGauge(corrupt))
		s.metrics.alarm.WithLabelValues("nospace").Set(boolGauge(hasAlarm(alarms, pb.AlarmType_NOSPACE)))
	}
	backedUp := s.backedUpLocked()
	if leader {
		s.clock.observe(s.revision, now)
		var exact time.Time
		if s.delta.Stored >= backedUp {
			// The revisions the taker holds are the first ones after the store's.
			exact = s.delta.Oldest
		}
		s.unbacked = s.clock.unbackedSince(backedUp, exact)
	} else {
		// The leader backs up; this member does not see its uploads.
		s.clock.reset()
		s.unbacked, backedUp = time.Time{}, s.revision
	}
	s.metrics.etcdRevision.Set(float64(s.revision))
	s.metrics.deltaLag.Set(float64(max(0, s.revision-backedUp)))
	age := 0.0
	if !s.unbacked.IsZero() {
		age = now.Sub(s.unbacked).Seconds()
	}
	s.metrics.unbackedAge.Set(age)
	for _, c := range s.readinessLocked(now) {
		s.metrics.ready.WithLabelValues(c.Name).Set(boolGauge(c.OK))
	}
	return corrupt, serving
}

// hasCorruptAlarm reports whether alarms hold a CORRUPT alarm (of any member).
func hasCorruptAlarm(alarms []*pb.AlarmMember) bool {
	return hasAlarm(alarms, pb.AlarmType_CORRUPT)
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
