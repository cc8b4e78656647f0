package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	// The time zone database, so that --gc-time-zone works where the system has none
	// (scratch and some distroless images).
	_ "time/tzdata"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// GCPolicyFlags choose what garbage collection keeps (docs/retention.md).
type GCPolicyFlags struct {
	GCPolicy   string       `name:"gc-policy" help:"Retention policy: exponential (everything of the current hour; the newest full snapshot of each earlier hour of today, of each of the 7 days before, of each of the 4 calendar weeks before this one) or limit (the newest --max-backups full snapshots and the deltas after the oldest of them)." default:"exponential" enum:"exponential,limit" env:"ETCDBR_GC_POLICY"`
	MaxBackups int          `name:"max-backups" help:"How many full snapshots --gc-policy limit keeps (at least 1; required with it)." env:"ETCDBR_MAX_BACKUPS" placeholder:"N"`
	KeepWithin longDuration `name:"keep-within" help:"Also keep everything needed to restore to any point of this last stretch of time, whatever the policy says: 36h, 7d, 2w, 1w3d12h (0: nothing more)." default:"0" env:"ETCDBR_KEEP_WITHIN" placeholder:"DURATION"`
	GCTimeZone string       `name:"gc-time-zone" help:"Time zone in which --gc-policy exponential counts hours, days and weeks: UTC (the time zone of backup names), an IANA name such as Europe/Berlin, or Local." default:"UTC" env:"ETCDBR_GC_TIME_ZONE" placeholder:"ZONE"`
}

// GCFlags are the garbage collection flags of the commands that take backups: the policy
// and how often it runs.
type GCFlags struct {
	GCPolicyFlags `embed:""`
	GCPeriod      time.Duration `name:"gc-period" help:"How often garbage collection runs while this member takes backups; it also runs at start and after each full snapshot (at least 1s; 0 disables it: backups are then never deleted)." default:"1m" env:"ETCDBR_GC_PERIOD"`
}

// policy turns the flags into a retention policy; a wrong combination is a usage error.
func (f GCPolicyFlags) policy() (catalog.Policy, error) {
	p := catalog.Policy{Kind: catalog.PolicyKind(f.GCPolicy), MaxBackups: f.MaxBackups, KeepWithin: time.Duration(f.KeepWithin)}
	switch {
	case f.MaxBackups < 0:
		return p, usageErrorf("--max-backups %d: keep at least 1 full snapshot", f.MaxBackups)
	case p.Kind == catalog.PolicyLimit && f.MaxBackups == 0:
		return p, usageErrorf("--gc-policy limit needs --max-backups N: how many full snapshots to keep (at least 1)")
	case p.Kind == catalog.PolicyExponential && f.MaxBackups != 0:
		return p, usageErrorf("--max-backups %d applies only to --gc-policy limit (the exponential policy keeps one full "+
			"snapshot per hour, day and week): add --gc-policy limit, or drop --max-backups", f.MaxBackups)
	case p.Kind == catalog.PolicyLimit && f.GCTimeZone != "" && f.GCTimeZone != "UTC":
		return p, usageErrorf("--gc-time-zone %s applies only to --gc-policy exponential (the limit policy counts full "+
			"snapshots, not hours): drop it", f.GCTimeZone)
	}
	if f.GCTimeZone != "" {
		loc, err := time.LoadLocation(f.GCTimeZone)
		if err != nil {
			return p, usageErrorf("--gc-time-zone %q: %v: use UTC, Local, or an IANA time zone name such as Europe/Berlin or America/New_York", f.GCTimeZone, err)
		}
		p.Location = loc
	}
	if err := p.Validate(); err != nil {
		return p, usageError{err}
	}
	return p, nil
}

// config returns the policy and the period; enabled is false with --gc-period 0.
func (f GCFlags) config() (policy catalog.Policy, period time.Duration, enabled bool, err error) {
	if f.GCPeriod < 0 || (f.GCPeriod > 0 && f.GCPeriod < time.Second) {
		return policy, 0, false, usageErrorf("--gc-period %v: use at least 1s, or 0 to disable garbage collection", f.GCPeriod)
	}
	policy, err = f.policy()
	if err != nil {
		return policy, 0, false, err
	}
	return policy, f.GCPeriod, f.GCPeriod > 0, nil
}

// longDuration is a duration that also takes days and weeks: 36h, 7d, 2w, 1w3d12h30m.
type longDuration time.Duration

// UnmarshalText parses a duration: Go's units (h, m, s, ms...) after optional weeks (w) and
// days (d) of 24 hours.
func (d *longDuration) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	bad := func() error {
		return fmt.Errorf("invalid duration %q: use a number with a unit, e.g. 36h, 7d, 2w or 1w3d12h (w: 7 days, d: 24 hours)", s)
	}
	if s == "" || strings.HasPrefix(s, "-") || strings.HasPrefix(s, "+") {
		return bad()
	}
	var total time.Duration
	rest := s
	for _, u := range []struct {
		unit string
		size time.Duration
	}{{"w", 7 * 24 * time.Hour}, {"d", 24 * time.Hour}} {
		i := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
		if i <= 0 || !strings.HasPrefix(rest[i:], u.unit) {
			continue
		}
		n, err := strconv.ParseInt(rest[:i], 10, 64)
		if err != nil || n > int64(1<<62)/int64(u.size) {
			return bad()
		}
		total += time.Duration(n) * u.size
		rest = rest[i+len(u.unit):]
	}
	if rest != "" {
		more, err := time.ParseDuration(rest)
		if err != nil || more < 0 {
			return bad()
		}
		total += more
	}
	*d = longDuration(total)
	return nil
}

// String formats the duration as Go does (168h0m0s for 7d).
func (d longDuration) String() string { return time.Duration(d).String() }
