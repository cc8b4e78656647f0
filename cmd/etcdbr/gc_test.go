package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// writeGenerations writes n generations of backups an hour apart, ending an hour ago: a
// full snapshot and two deltas each, the first delta starting before its full snapshot.
func writeGenerations(t *testing.T, dir string, n int) (fulls, deltas []catalog.Snapshot) {
	t.Helper()
	ctx := context.Background()
	s, err := snapstore.Open(ctx, "file://"+dir, snapstore.Options{})
	require.NoError(t, err)
	defer s.Close()
	put := func(snap catalog.Snapshot) catalog.Snapshot {
		w, err := s.Create(ctx, snap)
		require.NoError(t, err)
		defer w.Abort()
		_, err = w.Write([]byte("payload"))
		require.NoError(t, err)
		done, err := w.Commit()
		require.NoError(t, err)
		return done
	}
	start := time.Now().UTC().Add(-time.Duration(n) * time.Hour)
	last := int64(9)
	for g := range n {
		at := start.Add(time.Duration(g) * time.Hour)
		fulls = append(fulls, put(catalog.Snapshot{Kind: catalog.KindFull, Revision: last + 2, Time: at}))
		for d := 1; d <= 2; d++ {
			deltas = append(deltas, put(catalog.Snapshot{Kind: catalog.KindDelta, From: last + 1, Revision: last + 5, Time: at.Add(time.Duration(d) * time.Minute)}))
			last += 5
		}
	}
	return fulls, deltas
}

func TestGCCommand(t *testing.T) {
	dir := t.TempDir()
	fulls, deltas := writeGenerations(t, dir, 3)
	store := "file://" + dir

	// A dry run prints the plan and deletes nothing.
	code, out := etcdbr(t, "gc", "--store", store, "--gc-policy", "limit", "--max-backups", "2", "--dry-run")
	require.Equal(t, exitOK, code, out)
	assert.Contains(t, out, "policy: limit: the newest 2 full snapshots")
	assert.Contains(t, out, "point-in-time window: every point from ")
	assert.Contains(t, out, "keep "+fulls[1].Key+": a restore to any point from ")
	assert.Contains(t, out, "keep "+fulls[2].Key+": one of the newest 2 full snapshots")
	assert.Contains(t, out, "keep 4 deltas: in the point-in-time window")
	for _, s := range []catalog.Snapshot{deltas[1], deltas[0], fulls[0]} {
		assert.Contains(t, out, "would delete "+s.Key+": ")
	}
	assert.Contains(t, out, "would delete 1 full snapshot and 2 deltas (")
	// Deltas first, newest first.
	assert.Less(t, strings.Index(out, "would delete "+deltas[1].Key), strings.Index(out, "would delete "+deltas[0].Key))
	assert.Less(t, strings.Index(out, "would delete "+deltas[0].Key), strings.Index(out, "would delete "+fulls[0].Key))
	assert.Len(t, listed(t, store), 9)

	// The same from the environment, deleting.
	t.Setenv("ETCDBR_GC_POLICY", "limit")
	t.Setenv("ETCDBR_MAX_BACKUPS", "2")
	code, out = etcdbr(t, "gc", "--store", store)
	require.Equal(t, exitOK, code, out)
	for _, s := range []catalog.Snapshot{deltas[1], deltas[0], fulls[0]} {
		assert.Contains(t, out, "deleted "+s.Key+": ")
	}
	assert.Contains(t, out, "deleted 1 full snapshot and 2 deltas (")
	assert.Len(t, listed(t, store), 6)

	// Nothing left to delete.
	code, out = etcdbr(t, "gc", "--store", store)
	require.Equal(t, exitOK, code, out)
	assert.Contains(t, out, "deleted 0 full snapshots and 0 deltas")
	assert.Len(t, listed(t, store), 6)
}

func TestGCCommandRestoreInProgress(t *testing.T) {
	dir := t.TempDir()
	writeGenerations(t, dir, 3)
	store := "file://" + dir
	s, err := snapstore.Open(context.Background(), store, snapstore.Options{})
	require.NoError(t, err)
	defer s.Close()
	lock, err := s.AcquireRestoreLock(context.Background(), snapstore.LockOptions{Holder: "host-b pid 7", Purpose: "restore to the latest point", Settle: -1})
	require.NoError(t, err)
	defer lock.Release(context.Background())

	code, out := etcdbr(t, "gc", "--store", store, "--gc-policy", "limit", "--max-backups", "1")
	require.Equal(t, exitOK, code, out)
	assert.Contains(t, out, "restore in progress: restore lock "+lock.Held().ID+" of host-b pid 7 (restore to the latest point)")
	assert.Contains(t, out, "nothing is deleted: ")
	assert.Len(t, listed(t, store), 9)
}

func listed(t *testing.T, store string) []catalog.Snapshot {
	t.Helper()
	s, err := snapstore.Open(context.Background(), store, snapstore.Options{})
	require.NoError(t, err)
	defer s.Close()
	l, err := s.ListForGC(context.Background())
	require.NoError(t, err)
	return append(l.Fulls, l.Deltas...)
}

func TestGCFlags(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	require.NoError(t, err)
	for _, tc := range []struct {
		name   string
		flags  GCFlags
		policy catalog.Policy
		period time.Duration
		err    string
	}{
		{name: "the defaults", flags: GCFlags{GCPolicyFlags{GCPolicy: "exponential", GCTimeZone: "UTC"}, time.Minute},
			policy: catalog.Policy{Kind: catalog.PolicyExponential, Location: time.UTC}, period: time.Minute},
		{name: "limit", flags: GCFlags{GCPolicyFlags{GCPolicy: "limit", MaxBackups: 24, GCTimeZone: "UTC"}, time.Minute},
			policy: catalog.Policy{Kind: catalog.PolicyLimit, MaxBackups: 24, Location: time.UTC}, period: time.Minute},
		{name: "a time zone and keep-within", flags: GCFlags{GCPolicyFlags{GCPolicy: "exponential", GCTimeZone: "Europe/Berlin", KeepWithin: longDuration(7 * 24 * time.Hour)}, 30 * time.Second},
			policy: catalog.Policy{Kind: catalog.PolicyExponential, Location: berlin, KeepWithin: 7 * 24 * time.Hour}, period: 30 * time.Second},
		{name: "disabled", flags: GCFlags{GCPolicyFlags{GCPolicy: "exponential", GCTimeZone: "UTC"}, 0},
			policy: catalog.Policy{Kind: catalog.PolicyExponential, Location: time.UTC}},
		{name: "limit without a number", flags: GCFlags{GCPolicyFlags{GCPolicy: "limit", GCTimeZone: "UTC"}, time.Minute},
			err: "--gc-policy limit needs --max-backups N"},
		{name: "a number without limit", flags: GCFlags{GCPolicyFlags{GCPolicy: "exponential", MaxBackups: 3, GCTimeZone: "UTC"}, time.Minute},
			err: "--max-backups 3 applies only to --gc-policy limit"},
		{name: "a negative number", flags: GCFlags{GCPolicyFlags{GCPolicy: "limit", MaxBackups: -1, GCTimeZone: "UTC"}, time.Minute},
			err: "--max-backups -1: keep at least 1"},
		{name: "a time zone with limit", flags: GCFlags{GCPolicyFlags{GCPolicy: "limit", MaxBackups: 3, GCTimeZone: "Europe/Berlin"}, time.Minute},
			err: "--gc-time-zone Europe/Berlin applies only to --gc-policy exponential"},
		{name: "an unknown time zone", flags: GCFlags{GCPolicyFlags{GCPolicy: "exponential", GCTimeZone: "Mars/Olympus"}, time.Minute},
			err: `--gc-time-zone "Mars/Olympus"`},
		{name: "a period too short", flags: GCFlags{GCPolicyFlags{GCPolicy: "exponential", GCTimeZone: "UTC"}, time.Millisecond},
			err: "--gc-period 1ms: use at least 1s, or 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			policy, period, enabled, err := tc.flags.config()
			if tc.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.err)
				var ue usageError
				assert.ErrorAs(t, err, &ue, "a usage error (exit code 2)")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.policy, policy)
			assert.Equal(t, tc.period, period)
			assert.Equal(t, tc.period > 0, enabled)
		})
	}
}

func TestLongDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"0": 0, "36h": 36 * time.Hour, "7d": 7 * 24 * time.Hour, "2w": 14 * 24 * time.Hour,
		"1w3d12h30m": (10*24+12)*time.Hour + 30*time.Minute, "90s": 90 * time.Second, "1d": 24 * time.Hour,
	} {
		var d longDuration
		require.NoError(t, d.UnmarshalText([]byte(in)), in)
		assert.Equal(t, want, time.Duration(d), in)
	}
	for _, in := range []string{"", "7", "d", "-1h", "1.5d", "3d2w", "1y", "7 d"} {
		var d longDuration
		assert.Error(t, d.UnmarshalText([]byte(in)), in)
	}
}

func TestGCCommandUsageErrors(t *testing.T) {
	store := "file://" + t.TempDir()
	for _, args := range [][]string{
		{"gc", "--store", store, "--gc-policy", "limit"},
		{"gc", "--store", store, "--max-backups", "3"},
		{"gc", "--store", store, "--keep-within", "7x"},
		{"gc", "--store", store, "--gc-policy", "forever"},
		{"gc"},
	} {
		code, out := etcdbr(t, args...)
		assert.Equal(t, exitUsage, code, "%v: %s", args, out)
	}
}
