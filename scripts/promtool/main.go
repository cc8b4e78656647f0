// Command promtool builds Prometheus' promtool from the Go module proxy into a cache
// directory once and prints the binary's path. The test suite runs it on the alerting
// rules in deploy/monitoring (promtool check rules, promtool test rules).
//
//	go run ./scripts/promtool          # prints the path, building it when missing
//	go run ./scripts/promtool -force   # builds it again
//
// The cache is $ETCDBR_PROMTOOL_CACHE, or etcdbr-promtool/<version> in the user's cache
// directory (~/.cache/etcdbr-promtool/v0.316.0 on Linux). Progress goes to stderr, only
// the path to stdout.
//
// Prometheus publishes its Go module as github.com/prometheus/prometheus v0.3xx.y (v3.x
// releases carry the matching v0.3xx tag); its go.mod has no replace directive, so a plain
// `go install` of cmd/promtool at that version builds it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/etcdbr/etcdbr/internal/toolcache"
)

// Version is the version of the module github.com/prometheus/prometheus built.
const Version = "v0.316.0"

// EnvCacheDir overrides the cache directory.
const EnvCacheDir = "ETCDBR_PROMTOOL_CACHE"

func main() {
	toolcache.Tool{Name: "promtool", Version: Version, EnvDir: EnvCacheDir, Cache: "etcdbr-promtool",
		Build: build, Slow: "minutes"}.Main()
}

// build installs promtool into work (out is work/promtool).
func build(ctx context.Context, work, out string) error {
	cmd := exec.CommandContext(ctx, "go", "install", "-trimpath", "-ldflags", "-s -w",
		"github.com/prometheus/prometheus/cmd/promtool@"+Version)
	cmd.Dir = work
	// Outside any workspace and without the caller's build flags.
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=", "GO111MODULE=on", "CGO_ENABLED=0", "GOBIN="+work)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go install: %w", err)
	}
	if filepath.Join(work, "promtool") != out {
		return fmt.Errorf("go install wrote %s, not %s", filepath.Join(work, "promtool"), out)
	}
	return nil
}
