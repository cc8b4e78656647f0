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
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/etcdbr/etcdbr/internal/dirlock"
)

// Version is the version of the module github.com/prometheus/prometheus built.
const Version = "v0.316.0"

// EnvCacheDir overrides the cache directory.
const EnvCacheDir = "ETCDBR_PROMTOOL_CACHE"

func main() {
	force := flag.Bool("force", false, "build again even when the cached binary exists")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: promtool [-force]")
		flag.PrintDefaults()
	}
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dir, err := cacheDir()
	if err == nil {
		var path string
		path, err = ensure(ctx, dir, *force)
		if err == nil {
			fmt.Println(path)
			return
		}
	}
	fmt.Fprintf(os.Stderr, "promtool: %v\n", err)
	os.Exit(1)
}

// cacheDir is $ETCDBR_PROMTOOL_CACHE or etcdbr-promtool/<Version> in the user's cache
// directory, outside the checkout, so that clones and CI runs share it.
func cacheDir() (string, error) {
	if dir := os.Getenv(EnvCacheDir); dir != "" {
		return filepath.Abs(dir)
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find the cache directory: %w: set %s", err, EnvCacheDir)
	}
	return filepath.Join(base, "etcdbr-promtool", Version), nil
}

// ensure returns the path of the cached binary in dir, building it first when it is
// missing (or when force is set). Builds are serialized by a lock in dir and install into
// a temporary directory renamed into place, so a killed build never leaves half a binary
// under the final name.
func ensure(ctx context.Context, dir string, force bool) (string, error) {
	target := filepath.Join(dir, "promtool")
	if !force && isExecutable(target) {
		return target, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create cache directory: %w", err)
	}
	unlock, err := dirlock.Lock(dir)
	if err != nil {
		return "", err
	}
	defer unlock()
	if !force && isExecutable(target) { // another run built it while we waited
		return target, nil
	}
	start := time.Now()
	fmt.Fprintf(os.Stderr, "promtool: building %s into %s (minutes the first time)\n", Version, dir)
	work, err := os.MkdirTemp(dir, "build-*")
	if err != nil {
		return "", fmt.Errorf("create build directory: %w", err)
	}
	defer os.RemoveAll(work)
	cmd := exec.CommandContext(ctx, "go", "install", "-trimpath", "-ldflags", "-s -w",
		"github.com/prometheus/prometheus/cmd/promtool@"+Version)
	cmd.Dir = work
	// Outside any workspace and without the caller's build flags.
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=", "GO111MODULE=on", "CGO_ENABLED=0", "GOBIN="+work)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go install promtool %s: %w", Version, err)
	}
	if err := os.Rename(filepath.Join(work, "promtool"), target); err != nil {
		return "", fmt.Errorf("move the binary into place: %w", err)
	}
	fmt.Fprintf(os.Stderr, "promtool: built in %v\n", time.Since(start).Round(time.Second))
	return target, nil
}

// isExecutable reports whether path is a regular file someone may execute.
func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
