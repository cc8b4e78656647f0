package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDefragFlags(t *testing.T) {
	on := DefragFlags{Defrag: true, DefragMinFree: 100 << 20, DefragMinFreeRatio: 0.5, DefragCheckPeriod: time.Minute}
	cfg, err := on.config()
	require.NoError(t, err)
	require.Equal(t, int64(100<<20), cfg.MinFree)
	require.Equal(t, 0.5, cfg.MinFreeRatio)
	require.Equal(t, time.Minute, cfg.Period)
	require.Nil(t, cfg.Schedule)

	off := on
	off.Defrag = false
	cfg, err = off.config()
	require.NoError(t, err)
	require.Nil(t, cfg, "--no-defrag")

	sched := on
	sched.DefragSchedule = "@weekly"
	cfg, err = sched.config()
	require.NoError(t, err)
	require.Equal(t, "@weekly", cfg.Schedule.String())

	for name, f := range map[string]func(*DefragFlags){
		"a bad schedule":        func(f *DefragFlags) { f.DefragSchedule = "every day" },
		"a ratio above 1":       func(f *DefragFlags) { f.DefragMinFreeRatio = 2 },
		"both bounds 0":         func(f *DefragFlags) { f.DefragMinFree, f.DefragMinFreeRatio = 0, 0 },
		"a negative size":       func(f *DefragFlags) { f.DefragMinFree = -1 },
		"a check period of 0":   func(f *DefragFlags) { f.DefragCheckPeriod = 0 },
		"a check period of 1ms": func(f *DefragFlags) { f.DefragCheckPeriod = time.Millisecond },
	} {
		bad := on
		f(&bad)
		_, err := bad.config()
		var usage usageError
		require.ErrorAs(t, err, &usage, name)
	}
}
