package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestBenchSmoke runs the restore benchmark with tiny sizes: it builds the binaries, makes a
// store, restores it both ways and reports.
func TestBenchSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"-keys", "300", "-events", "900", "-delta-revisions", "150", "-writers", "3", "-dir", t.TempDir()}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit code %d\nstdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
	}
	out := stdout.String()
	t.Log(out)
	for _, s := range []string{
		"300 keys of 200 bytes", "then 900 events in",
		"etcdutl snapshot restore, full snapshot alone: wall", "etcdbr restore, full snapshot and deltas:",
		"peak RSS", "peak RssAnon", "revisions/s", "the source's last",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("the report does not say %q", s)
		}
	}
}

func TestBenchUsage(t *testing.T) {
	for _, args := range [][]string{{"-scenario", "nope"}, {"-keys", "0"}, {"-bogus"}} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != 2 {
			t.Errorf("%v: exit code %d, want 2", args, code)
		}
	}
}
