package embedded

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/features"
	"go.uber.org/zap"

	"github.com/etcdbr/etcdbr/internal/embeddedtest"
)

// TestKubeadmStaticPodFlags runs etcd with the flags kubeadm's etcd static pod
// manifest passes. It is not parallel: it sets the process environment.
func TestKubeadmStaticPodFlags(t *testing.T) {
	pki := embeddedtest.NewPKI(t)
	client := embeddedtest.FreeURL(t, "https")
	peer := embeddedtest.FreeURL(t, "https")
	metrics := embeddedtest.FreeURL(t, "http")
	dataDir := filepath.Join(t.TempDir(), "etcd")

	// Not a kubeadm flag: keeps etcd's logs quiet without touching the list.
	t.Setenv("ETCD_LOG_LEVEL", "error")
	args := []string{
		"--advertise-client-urls=" + client.String(),
		"--cert-file=" + pki.ServerCert,
		"--client-cert-auth=true",
		"--data-dir=" + dataDir,
		"--experimental-initial-corrupt-check=true",
		"--experimental-watch-progress-notify-interval=5s",
		"--initial-advertise-peer-urls=" + peer.String(),
		"--initial-cluster=node-1=" + peer.String(),
		"--key-file=" + pki.ServerKey,
		"--listen-client-urls=" + client.String(),
		"--listen-metrics-urls=" + metrics.String(),
		"--listen-peer-urls=" + peer.String(),
		"--name=node-1",
		"--peer-cert-file=" + pki.PeerCert,
		"--peer-client-cert-auth=true",
		"--peer-key-file=" + pki.PeerKey,
		"--peer-trusted-ca-file=" + pki.CA,
		"--snapshot-count=10000",
		"--trusted-ca-file=" + pki.CA,
	}
	cfg, err := ParseFlags(args)
	require.NoError(t, err)
	assert.True(t, cfg.ServerFeatureGate.Enabled(features.InitialCorruptCheck))
	assert.Equal(t, 5*time.Second, cfg.WatchProgressNotifyInterval)
	assert.True(t, cfg.ClientTLSInfo.ClientCertAuth)
	assert.True(t, cfg.PeerTLSInfo.ClientCertAuth)

	embeddedtest.MustStart(t, Start, cfg)

	ctx := context.Background()
	caPool := x509.NewCertPool()
	caPEM, err := os.ReadFile(pki.CA)
	require.NoError(t, err)
	require.True(t, caPool.AppendCertsFromPEM(caPEM))

	t.Run("client with certificate", func(t *testing.T) {
		cert, err := tls.LoadX509KeyPair(pki.ClientCert, pki.ClientKey)
		require.NoError(t, err)
		c := newTLSClient(t, client.String(), &tls.Config{RootCAs: caPool, Certificates: []tls.Certificate{cert}})
		_, err = c.Put(ctx, "/registry/pods/default/p", "spec")
		require.NoError(t, err)
		resp, err := c.Get(ctx, "/registry/pods/default/p")
		require.NoError(t, err)
		require.Len(t, resp.Kvs, 1)
		assert.Equal(t, "spec", string(resp.Kvs[0].Value))
	})

	t.Run("client without certificate is refused", func(t *testing.T) {
		c := newTLSClient(t, client.String(), &tls.Config{RootCAs: caPool})
		tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := c.Get(tctx, "/registry/pods/default/p")
		require.Error(t, err)

		// The refusal itself, at the TLS level.
		conn, err := tls.Dial("tcp", client.Host, &tls.Config{RootCAs: caPool, NextProtos: []string{"h2"}})
		if err == nil {
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		require.Error(t, err)
		assert.Contains(t, err.Error(), "certificate required")
	})

	t.Run("metrics", func(t *testing.T) {
		resp, err := http.Get(metrics.String() + "/metrics")
		require.NoError(t, err)
		defer resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		assert.Contains(t, string(body), "etcd_server_has_leader 1")
	})
}

func newTLSClient(t *testing.T, endpoint string, tlsCfg *tls.Config) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		TLS:         tlsCfg,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	require.NoError(t, err, fmt.Sprintf("client for %s", endpoint))
	t.Cleanup(func() { c.Close() })
	return c
}
