package toolcache

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// Ensure builds once, reuses the cached binary, builds again with force, and leaves nothing
// under the final name when a build fails.
func TestEnsure(t *testing.T) {
	ctx := context.Background()
	t.Setenv("ETCDBR_TOOLCACHE_TEST", t.TempDir())
	builds := 0
	fail := false
	tool := Tool{Name: "tool", Version: "v1", EnvDir: "ETCDBR_TOOLCACHE_TEST", Slow: "no time",
		Build: func(_ context.Context, work, out string) error {
			builds++
			if filepath.Dir(out) != work {
				t.Errorf("out %s is not in work %s", out, work)
			}
			if err := os.WriteFile(out, []byte("#!/bin/sh\n"), 0o755); err != nil {
				return err
			}
			if fail {
				return errors.New("compiler exploded")
			}
			return nil
		}}
	path, err := tool.Ensure(ctx, false)
	if err != nil || builds != 1 || !isExecutable(path) {
		t.Fatalf("first Ensure: %s, %v, %d builds", path, err, builds)
	}
	if again, err := tool.Ensure(ctx, false); err != nil || again != path || builds != 1 {
		t.Fatalf("second Ensure: %s, %v, %d builds; want the cached %s", again, err, builds, path)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	fail = true
	if _, err := tool.Ensure(ctx, true); err == nil || builds != 2 {
		t.Fatalf("a failed build: %v, %d builds", err, builds)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a failed build left %s: %v", path, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	for _, e := range entries {
		if e.Name() != ".lock" {
			t.Errorf("a failed build left %s in the cache", e.Name())
		}
	}
}
