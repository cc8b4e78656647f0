// Command test-services runs a command (the tests) with real object-storage
// servers: it installs MinIO, fake-gcs-server and Azurite into a cache
// directory once, starts them on free loopback ports, runs the command with
// their endpoints in ETCDBR_TEST_* variables, then stops them and removes
// their data.
//
//	go run ./scripts/test-services -- go test ./...
//	go run ./scripts/test-services -install   # only install
//
// The cache is $ETCDBR_TEST_SERVICES_CACHE or ~/.cache/etcdbr-test-services.
// It exits with the command's exit code.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/etcdbr/etcdbr/internal/storetest"
)

func main() {
	os.Exit(run())
}

func run() int {
	installOnly := flag.Bool("install", false, "only install the servers")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: test-services [-install] [-- command [args...]]")
		flag.PrintDefaults()
	}
	flag.Parse()
	if !*installOnly && flag.NArg() == 0 {
		flag.Usage()
		return 2
	}
	// The command gets the terminal's signals itself; outlive it to clean up.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM)
	ctx := context.Background()

	cache, err := storetest.DefaultCacheDir()
	if err != nil {
		return fail(err)
	}
	start := time.Now()
	bins, err := storetest.Install(ctx, cache, os.Stderr)
	if err != nil {
		return fail(err)
	}
	if *installOnly {
		fmt.Printf("minio:           %s\nfake-gcs-server: %s\nazurite:         %s\n", bins.MinIO, bins.FakeGCS, bins.Azurite)
		return 0
	}
	installed := time.Since(start)

	dir, err := os.MkdirTemp("", "etcdbr-test-services-*")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(dir)
	servers, err := startAll(ctx, bins, dir)
	defer stopAll(servers)
	if err != nil {
		return fail(err)
	}
	fmt.Fprintf(os.Stderr, "test-services: installed in %v, started in %v:", installed.Round(time.Millisecond),
		(time.Since(start) - installed).Round(time.Millisecond))
	for _, s := range servers {
		fmt.Fprintf(os.Stderr, " %s=%s", s.Kind, s.Endpoint)
	}
	fmt.Fprintln(os.Stderr)

	cmd := exec.Command(flag.Arg(0), flag.Args()[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), storetest.Environ(servers, bins)...)
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit) && exit.ExitCode() > 0:
		return exit.ExitCode()
	default:
		return fail(err)
	}
}

// startAll starts one server of each kind, each with its data under dir.
func startAll(ctx context.Context, bins storetest.Binaries, dir string) ([]*storetest.Server, error) {
	servers := make([]*storetest.Server, len(storetest.Kinds))
	errs := make([]error, len(storetest.Kinds))
	var wg sync.WaitGroup
	for i, kind := range storetest.Kinds {
		wg.Go(func() {
			servers[i], errs[i] = storetest.Start(ctx, kind, bins, filepath.Join(dir, string(kind)))
		})
	}
	wg.Wait()
	var started []*storetest.Server
	for _, s := range servers {
		if s != nil {
			started = append(started, s)
		}
	}
	return started, errors.Join(errs...)
}

func stopAll(servers []*storetest.Server) {
	for _, s := range servers {
		s.Kill() // their data is thrown away: no need to wait for a clean stop
	}
}

func fail(err error) int {
	fmt.Fprintf(os.Stderr, "test-services: %v\n", err)
	return 1
}
