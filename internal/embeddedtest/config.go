// Package embeddedtest provides helpers for tests that run a real embedded etcd.
package embeddedtest

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"go.etcd.io/etcd/server/v3/embed"
)

// NewConfig returns an embed.Config for tests: the data dir is "data" inside
// t.TempDir() (not created, so the parent is a scratch directory the test owns),
// the client, peer and metrics URLs are plain http on free loopback ports, etcd
// logs at level "error" and the member is named "test". Each call picks its own
// ports, so parallel tests do not collide.
func NewConfig(t testing.TB) *embed.Config {
	t.Helper()

	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = filepath.Join(t.TempDir(), "data")
	cfg.LogLevel = "error"

	client := FreeURL(t, "http")
	peer := FreeURL(t, "http")
	metrics := FreeURL(t, "http")
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.ListenMetricsUrls = []url.URL{metrics}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	return cfg
}

// FreeURL returns scheme://127.0.0.1:<port> for a loopback port that was free
// when it was picked (the kernel chose it for a listener that is closed again).
func FreeURL(t testing.TB, scheme string) url.URL {
	t.Helper()
	return url.URL{Scheme: scheme, Host: fmt.Sprintf("127.0.0.1:%d", FreePort(t))}
}

// Ports FreePort picks from: below Linux's default ephemeral range (32768-60999), from
// which the kernel takes the source port of every outgoing connection. A port picked from
// that range (a probe of port 0) is free when picked, but any connection made before the
// server binds it may take it ("address already in use").
//
// The range is cut into blocks; each test process claims one block for itself (an flock on
// a file named for the block, held until the process exits) and hands its ports out in
// turn, so that two tests, in one process or in two (go test runs packages side by side),
// never get the same port while each still holds it. A random pick over the whole range
// did collide: two tests of the suite drew the same port within seconds.
const (
	freePortMin   = 20000
	freePortMax   = 32767
	freePortBlock = 1000
)

// portBlock is the block of ports this process claimed, and the next one to hand out.
// It is the test process's one piece of global state: ports are a resource of the
// machine, not of a test.
var portBlock struct {
	mu    sync.Mutex
	lock  *os.File // the claimed block's lock file, open (and locked) until exit
	first int      // the block's first port
	next  int      // offset of the next port to try
}

// claimPortBlock claims the first block no other process holds. Called with portBlock.mu held.
func claimPortBlock() error {
	if portBlock.lock != nil {
		return nil
	}
	for first := freePortMin; first+freePortBlock-1 <= freePortMax; first += freePortBlock {
		name := filepath.Join(os.TempDir(), fmt.Sprintf("etcdbr-test-ports-%d.lock", first))
		f, err := os.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			return fmt.Errorf("open port block lock %s: %w", name, err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		portBlock.lock, portBlock.first = f, first
		return nil
	}
	return fmt.Errorf("every block of %d loopback ports in %d-%d is claimed by another test process", freePortBlock, freePortMin, freePortMax)
}

// FreePort returns a loopback TCP port that is free now and that no other test (in this
// process or another that uses FreePort) was given recently: ports come in turn from a
// block this process holds, skipping any that something else is bound to.
func FreePort(t testing.TB) int {
	t.Helper()
	portBlock.mu.Lock()
	defer portBlock.mu.Unlock()
	if err := claimPortBlock(); err != nil {
		t.Fatal(err)
	}
	for range freePortBlock {
		port := portBlock.first + portBlock.next
		portBlock.next = (portBlock.next + 1) % freePortBlock
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		if err := l.Close(); err != nil {
			t.Fatalf("close port probe %d: %v", port, err)
		}
		return port
	}
	t.Fatalf("no free loopback port in this process's block %d-%d", portBlock.first, portBlock.first+freePortBlock-1)
	return 0
}
