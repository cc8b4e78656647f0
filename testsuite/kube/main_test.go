package kube

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// EnvAPIServer names a kube-apiserver binary to use instead of the one
// scripts/kube-apiserver builds and caches.
const EnvAPIServer = "ETCDBR_KUBE_APISERVER"

// etcdbrBin is the etcdbr binary built from this checkout for the whole run; apiserverBin
// is kube-apiserver.
var etcdbrBin, apiserverBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		// Every test here needs both binaries and takes minutes: nothing to build.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "etcdbr-kube-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := 1
	if err := setup(context.Background(), dir); err != nil {
		fmt.Fprintf(os.Stderr, "testsuite/kube: %v\n", err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// setup builds etcdbr from the repository root into dir and finds kube-apiserver.
func setup(ctx context.Context, dir string) error {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return fmt.Errorf("find the repository root: %w", err)
	}
	start := time.Now()
	etcdbrBin = filepath.Join(dir, "etcdbr")
	build := exec.CommandContext(ctx, "go", "build", "-o", etcdbrBin, "./cmd/etcdbr")
	build.Dir = root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build etcdbr in %s: %w", root, err)
	}
	if apiserverBin = os.Getenv(EnvAPIServer); apiserverBin != "" {
		fmt.Fprintf(os.Stderr, "testsuite/kube: etcdbr built in %v; kube-apiserver from $%s: %s\n",
			time.Since(start).Round(time.Millisecond), EnvAPIServer, apiserverBin)
		return nil
	}
	built := time.Now()
	// The script builds kube-apiserver the first time (minutes) and prints the cached path.
	var out bytes.Buffer
	script := exec.CommandContext(ctx, "go", "run", "./scripts/kube-apiserver")
	script.Dir = root
	script.Stdout, script.Stderr = &out, os.Stderr
	if err := script.Run(); err != nil {
		return fmt.Errorf("go run ./scripts/kube-apiserver: %w", err)
	}
	apiserverBin = strings.TrimSpace(out.String())
	if apiserverBin == "" {
		return fmt.Errorf("go run ./scripts/kube-apiserver printed no path")
	}
	fmt.Fprintf(os.Stderr, "testsuite/kube: etcdbr built in %v, kube-apiserver built or found in the cache in %v: %s\n",
		built.Sub(start).Round(time.Millisecond), time.Since(built).Round(time.Millisecond), apiserverBin)
	return nil
}

// needBinaries skips the test under -short, where TestMain builds nothing.
func needBinaries(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: the Kubernetes end-to-end tests take minutes")
	}
}
