package backup

import (
	"fmt"
	"strings"
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
	if every, d, ok := everyInterval(expr); ok {
		switch {
		case d < time.Second:
			return Schedule{}, fmt.Errorf("invalid full snapshot schedule %q: the interval %s is shorter than 1s, "+
				"which cron runs every second; give at least @every 1s, e.g. @every 30m or @hourly", expr, every)
		case d%time.Second != 0:
			return Schedule{}, fmt.Errorf("invalid full snapshot schedule %q: cron counts whole seconds "+
				"(@every %s would run every %s); give whole seconds, e.g. @every %s", expr, every, d.Truncate(time.Second), d.Round(time.Second))
		}
	}
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

// everyInterval returns the interval of an "@every DURATION" schedule, after an optional
// CRON_TZ= or TZ= prefix: as written and parsed; ok is false for other schedules and for an
// interval that does not parse (cron.ParseStandard reports it). cron runs intervals shorter
// than a second (0s, 1ms, negative ones) every second and truncates them to whole seconds,
// so ParseSchedule refuses what would not run as written.
func everyInterval(expr string) (written string, d time.Duration, ok bool) {
	spec := strings.TrimSpace(expr)
	if strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=") {
		_, rest, found := strings.Cut(spec, " ")
		if !found {
			return "", 0, false
		}
		spec = strings.TrimSpace(rest)
	}
	written, found := strings.CutPrefix(spec, "@every ")
	if !found {
		return "", 0, false
	}
	written = strings.TrimSpace(written)
	d, err := time.ParseDuration(written)
	if err != nil {
		return "", 0, false
	}
	return written, d, true
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
