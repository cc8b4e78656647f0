// Package embeddedtest provides helpers for tests that run a real embedded etcd.
package embeddedtest

import (
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
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pick a free loopback port: %v", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatalf("close port probe %s: %v", addr, err)
	}
	return url.URL{Scheme: scheme, Host: addr}
}
