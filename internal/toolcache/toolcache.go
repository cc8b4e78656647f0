// Package toolcache builds a tool the tests need (kube-apiserver, promtool) once into a
// cache directory outside the checkout, so that clones and CI runs on one machine share
// it, and prints its path.
package toolcache

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/etcdbr/etcdbr/internal/dirlock"
)

// Tool is one cached tool.
type Tool struct {
	// Name is the binary's name; Version the version built.
	Name, Version string
	// EnvDir names the variable that overrides the cache directory; Cache is the
	// directory under the user's cache directory otherwise (<Cache>/<Version>).
	EnvDir, Cache string
	// Build builds the binary into the file out, working in the empty directory work
	// (out is inside it). A slow build says how slow in Slow.
	Build func(ctx context.Context, work, out string) error
	Slow  string
}

// Main is a command's main: it prints the path of the tool, building it when it is missing
// (or with -force), and exits 1 with the error otherwise.
func (t Tool) Main() {
	force := flag.Bool("force", false, "build again even when the cached binary exists")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s [-force]\n", t.Name)
		flag.PrintDefaults()
	}
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	path, err := t.Ensure(ctx, *force)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", t.Name, err)
		os.Exit(1)
	}
	fmt.Println(path)
}

// Dir is $<EnvDir>, or <Cache>/<Version> in the user's cache directory.
func (t Tool) Dir() (string, error) {
	if dir := os.Getenv(t.EnvDir); dir != "" {
		return filepath.Abs(dir)
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find the cache directory: %w: set %s", err, t.EnvDir)
	}
	return filepath.Join(base, t.Cache, t.Version), nil
}

// Ensure returns the path of the cached binary, building it first when it is missing (or
// when force is set). Builds are serialized by a lock in the cache directory and happen in
// a temporary directory whose binary is renamed into place, so a killed build never leaves
// half a binary under the final name.
func (t Tool) Ensure(ctx context.Context, force bool) (string, error) {
	dir, err := t.Dir()
	if err != nil {
		return "", err
	}
	target := filepath.Join(dir, t.Name)
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
	fmt.Fprintf(os.Stderr, "%s: building %s into %s (%s the first time)\n", t.Name, t.Version, dir, t.Slow)
	work, err := os.MkdirTemp(dir, "build-*")
	if err != nil {
		return "", fmt.Errorf("create build directory: %w", err)
	}
	defer os.RemoveAll(work)
	out := filepath.Join(work, t.Name)
	if err := t.Build(ctx, work, out); err != nil {
		return "", fmt.Errorf("build %s %s: %w", t.Name, t.Version, err)
	}
	if err := os.Rename(out, target); err != nil {
		return "", fmt.Errorf("move the binary into place: %w", err)
	}
	fmt.Fprintf(os.Stderr, "%s: built in %v\n", t.Name, time.Since(start).Round(time.Second))
	return target, nil
}

// isExecutable reports whether path is a regular file someone may execute.
func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
