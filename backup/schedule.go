package backup

import (
	"fmt"
	"time"

	"github.com/robfig/cron/v3"
)

// Schedule is a validated cron schedule for full snapshots.
type Schedule struct {
	expr  string
	sched cron.Schedule
}

// ParseSchedule validates a standard five-field cron expression (or a descriptor such as
// "@hourly"; "CRON_TZ=Europe/Berlin 0 3 * * *" sets the time zone), the syntax gocron runs.
func ParseSchedule(expr string) (Schedule, error) {
	s, err := cron.ParseStandard(expr)
	if err != nil {
		return Schedule{}, fmt.Errorf("invalid full snapshot schedule %q: %v; use five cron fields "+
			"(minute hour day-of-month month day-of-week), e.g. \"0 * * * *\" for hourly, or a descriptor such as \"@daily\"", expr, err)
	}
	if s.Next(time.Now()).IsZero() {
		return Schedule{}, fmt.Errorf("invalid full snapshot schedule %q: it never fires; use e.g. \"0 * * * *\" for hourly", expr)
	}
	return Schedule{expr: expr, sched: s}, nil
}

// String returns the cron expression.
func (s Schedule) String() string { return s.expr }

// Next returns the first activation after t.
func (s Schedule) Next(t time.Time) time.Time { return s.sched.Next(t) }

// Period is the interval between the next two activations after t: how old the newest full
// snapshot may be before one is overdue.
func (s Schedule) Period(t time.Time) time.Duration {
	first := s.sched.Next(t)
	return s.sched.Next(first).Sub(first)
}
