package storetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/etcdbr/etcdbr/internal/dirlock"
)

// The versions of the servers Install installs. A new version is installed
// beside the old ones, so changing one here is all an upgrade takes.
const (
	MinIOModule    = "github.com/minio/minio"
	MinIOVersion   = "v0.0.0-20260212201848-7aac2a2c5b7c"
	FakeGCSModule  = "github.com/fsouza/fake-gcs-server"
	FakeGCSVersion = "v1.56.1"
	AzuriteVersion = "3.37.0"
)

// EnvCacheDir overrides DefaultCacheDir.
const EnvCacheDir = "ETCDBR_TEST_SERVICES_CACHE"

// Binaries are the installed servers.
type Binaries struct {
	MinIO   string // the minio binary
	FakeGCS string // the fake-gcs-server binary
	Node    string // node, which runs Azurite
	Azurite string // Azurite's blob service entry point (a node script)
}

// DefaultCacheDir is where Install keeps the servers: $ETCDBR_TEST_SERVICES_CACHE, or
// etcdbr-test-services in the user's cache directory (~/.cache on Linux). It is
// outside the checkout, so that a fresh clone reuses what an earlier one installed.
func DefaultCacheDir() (string, error) {
	if dir := os.Getenv(EnvCacheDir); dir != "" {
		return filepath.Abs(dir)
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find the cache directory: %w: set %s", err, EnvCacheDir)
	}
	return filepath.Join(base, "etcdbr-test-services"), nil
}

// Install makes sure the pinned versions of MinIO and fake-gcs-server (with
// go install) and Azurite (with npm) are in dir, installing what is missing,
// and returns their paths. Installs run in parallel and write into temporary
// names renamed into place when complete, under a lock, so that concurrent
// or interrupted runs never see half an install. Progress goes to log.
// MinIO takes a few minutes to build the first time.
func Install(ctx context.Context, dir string, log io.Writer) (Binaries, error) {
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return Binaries{}, fmt.Errorf("install test services: %w", err)
	}
	unlock, err := dirlock.Lock(dir)
	if err != nil {
		return Binaries{}, fmt.Errorf("install test services: %w", err)
	}
	defer unlock()

	node, err := exec.LookPath("node")
	if err != nil {
		return Binaries{}, fmt.Errorf("install test services: Azurite needs Node.js (node and npm on PATH): %w", err)
	}
	bins := Binaries{
		MinIO:   filepath.Join(dir, "bin", "minio-"+MinIOVersion),
		FakeGCS: filepath.Join(dir, "bin", "fake-gcs-server-"+FakeGCSVersion),
		Node:    node,
		Azurite: filepath.Join(dir, "azurite-"+AzuriteVersion, "node_modules", "azurite", "dist", "src", "blob", "main.js"),
	}
	jobs := []func() error{
		func() error { return goInstall(ctx, dir, MinIOModule, MinIOVersion, "minio", bins.MinIO, log) },
		func() error {
			return goInstall(ctx, dir, FakeGCSModule, FakeGCSVersion, "fake-gcs-server", bins.FakeGCS, log)
		},
		func() error { return npmInstall(ctx, dir, bins.Azurite, log) },
	}
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, job := range jobs {
		wg.Go(func() { errs[i] = job() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return Binaries{}, fmt.Errorf("install test services into %s: %w", dir, err)
	}
	return bins, nil
}

// goInstall builds module@version's command named cmd into target, unless it is there.
func goInstall(ctx context.Context, dir, module, version, cmd, target string, log io.Writer) error {
	if fileExists(target) {
		return nil
	}
	gobin, err := os.MkdirTemp(dir, "gobin-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(gobin)
	start := time.Now()
	fmt.Fprintf(log, "test-services: go install %s@%s (the first time only; MinIO takes minutes)\n", module, version)
	install := exec.CommandContext(ctx, "go", "install", module+"@"+version)
	// Outside any module or workspace, with none of the project's build flags.
	install.Dir = dir
	install.Env = append(os.Environ(), "GOBIN="+gobin, "GOFLAGS=", "GOWORK=off", "CGO_ENABLED=0")
	if out, err := install.CombinedOutput(); err != nil {
		return fmt.Errorf("go install %s@%s: %w\n%s", module, version, err, out)
	}
	if err := os.Rename(filepath.Join(gobin, cmd), target); err != nil {
		return fmt.Errorf("go install %s@%s: %w", module, version, err)
	}
	fmt.Fprintf(log, "test-services: installed %s in %v\n", filepath.Base(target), time.Since(start).Round(time.Second))
	return nil
}

// npmInstall installs Azurite into its versioned directory, unless it is there.
func npmInstall(ctx context.Context, dir, entry string, log io.Writer) error {
	if fileExists(entry) {
		return nil
	}
	final := filepath.Join(dir, "azurite-"+AzuriteVersion)
	if err := os.RemoveAll(final); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(dir, "azurite-*.tmp")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	start := time.Now()
	fmt.Fprintf(log, "test-services: npm install azurite@%s (the first time only)\n", AzuriteVersion)
	install := exec.CommandContext(ctx, "npm", "install", "--no-audit", "--no-fund", "--no-save",
		"--prefix", tmp, "azurite@"+AzuriteVersion)
	install.Dir = tmp
	if out, err := install.CombinedOutput(); err != nil {
		return fmt.Errorf("npm install azurite@%s: %w\n%s", AzuriteVersion, err, out)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("npm install azurite@%s: %w", AzuriteVersion, err)
	}
	if !fileExists(entry) {
		return fmt.Errorf("npm install azurite@%s: %s is missing after the install", AzuriteVersion, entry)
	}
	fmt.Fprintf(log, "test-services: installed azurite %s in %v\n", AzuriteVersion, time.Since(start).Round(time.Second))
	return nil
}

func fileExists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}
