package main

import (
	"fmt"
	"time"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/supervisor"
)

// DefragFlags configure the defragmentation of the cluster's members in run (docs/defrag.md).
type DefragFlags struct {
	Defrag             bool          `name:"defrag" negatable:"" default:"true" help:"Defragment the members whose free space passes the threshold (and on --defrag-schedule): the leader's etcdbr, one member at a time, followers first, the leader last, only while every member is healthy; --no-defrag turns it off." env:"ETCDBR_DEFRAG"`
	DefragMinFree      byteSize      `name:"defrag-min-free" placeholder:"SIZE" help:"Free space (db size minus size in use) a member's db must have before it is defragmented, in bytes or with a unit; --defrag-min-free-ratio must hold too." default:"100MiB" env:"ETCDBR_DEFRAG_MIN_FREE"`
	DefragMinFreeRatio float64       `name:"defrag-min-free-ratio" placeholder:"RATIO" help:"Share of the db file that must be free as well (0 to 1)." default:"0.5" env:"ETCDBR_DEFRAG_MIN_FREE_RATIO"`
	DefragSchedule     string        `name:"defrag-schedule" placeholder:"CRON" help:"Also defragment every member on this cron schedule (five fields, or @daily, @weekly...), whatever its free space (default: none)." env:"ETCDBR_DEFRAG_SCHEDULE"`
	DefragCheckPeriod  time.Duration `name:"defrag-check-period" help:"How often the leader asks every member for its db size (one Status request each)." default:"1m" env:"ETCDBR_DEFRAG_CHECK_PERIOD"`
}

// config returns the defragmentation's configuration, nil when it is off.
func (f DefragFlags) config() (*supervisor.DefragConfig, error) {
	if !f.Defrag {
		return nil, nil
	}
	if f.DefragCheckPeriod < time.Second/10 {
		return nil, usageErrorf("--defrag-check-period %v: use at least 100ms (or --no-defrag to turn defragmentation off)", f.DefragCheckPeriod)
	}
	cfg := &supervisor.DefragConfig{MinFree: int64(f.DefragMinFree), MinFreeRatio: f.DefragMinFreeRatio, Period: f.DefragCheckPeriod}
	if f.DefragSchedule != "" {
		sched, err := backup.ParseSchedule(f.DefragSchedule)
		if err != nil {
			return nil, usageError{fmt.Errorf("--defrag-schedule: %w", err)}
		}
		cfg.Schedule = &sched
	}
	if err := cfg.Validate(); err != nil {
		return nil, usageError{err}
	}
	return cfg, nil
}
