// Package embeddedtest provides helpers for tests that run a real embedded etcd.
package embeddedtest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"path/filepath"
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
const (
	freePortMin = 20000
	freePortMax = 32767
)

// FreePort returns a loopback TCP port that was free a moment ago, chosen at random below
// the ephemeral range, so that only another test picking the same port can take it first.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 200 {
		port := freePortMin + rand.IntN(freePortMax-freePortMin+1)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		if err := l.Close(); err != nil {
			t.Fatalf("close port probe %d: %v", port, err)
		}
		return port
	}
	t.Fatalf("no free loopback port in %d-%d after 200 tries", freePortMin, freePortMax)
	return 0
}
