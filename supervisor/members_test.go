package supervisor

import (
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdbr/etcdbr/internal/embeddedtest"
)

// The peers' client endpoints: given (this member's own left out), told from the peer URLs
// on port 2380 (kubeadm), refused on other ports, none for a single member.
func TestClusterEndpoints(t *testing.T) {
	t.Parallel()
	kubeadm := func() *embed.Config {
		cfg := embed.NewConfig()
		cfg.Name = "cp-2"
		cfg.InitialCluster = "cp-1=https://10.0.0.10:2380,cp-2=https://10.0.0.11:2380,cp-3=https://10.0.0.12:2380"
		cfg.AdvertiseClientUrls = []url.URL{{Scheme: "https", Host: "10.0.0.11:2379"}}
		cfg.ListenClientUrls = []url.URL{{Scheme: "https", Host: "127.0.0.1:2379"}, {Scheme: "https", Host: "10.0.0.11:2379"}}
		return cfg
	}
	eps, err := ClusterEndpoints(kubeadm(), nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"https://10.0.0.10:2379", "https://10.0.0.12:2379"}, eps)

	eps, err = ClusterEndpoints(kubeadm(), []string{"https://10.0.0.10:2379", "https://10.0.0.11:2379", "https://10.0.0.12:2379"})
	require.NoError(t, err)
	assert.Equal(t, []string{"https://10.0.0.10:2379", "https://10.0.0.12:2379"}, eps)

	_, err = ClusterEndpoints(kubeadm(), []string{"10.0.0.10:2379"})
	assert.ErrorContains(t, err, "--cluster-endpoints")

	other := kubeadm()
	other.InitialCluster = "cp-1=https://10.0.0.10:12380,cp-2=https://10.0.0.11:12380"
	_, err = ClusterEndpoints(other, nil)
	assert.ErrorContains(t, err, "--cluster-endpoints")

	single := kubeadm()
	single.InitialCluster = "cp-2=https://10.0.0.11:12380"
	eps, err = ClusterEndpoints(single, nil)
	require.NoError(t, err)
	assert.Empty(t, eps)
}

// The peers' client TLS: plain for http, etcd's own files by default, the cluster flags'
// over them.
func TestClusterTLS(t *testing.T) {
	t.Parallel()
	pki := embeddedtest.NewPKI(t)
	cfg := embed.NewConfig()
	cfg.ClientTLSInfo = transport.TLSInfo{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, TrustedCAFile: pki.CA}

	got, err := clusterTLS(cfg, ClusterConfig{Endpoints: []string{"http://a:2379"}})
	require.NoError(t, err)
	assert.Nil(t, got)

	got, err = clusterTLS(cfg, ClusterConfig{Endpoints: []string{"https://a:2379"}})
	require.NoError(t, err)
	assert.NotNil(t, got.GetClientCertificate, "a client certificate")
	assert.NotNil(t, got.RootCAs)

	_, err = clusterTLS(cfg, ClusterConfig{Endpoints: []string{"https://a:2379"}, CertFile: pki.Dir + "/missing.crt", KeyFile: pki.ServerKey})
	assert.ErrorContains(t, err, "--cluster-cert")

	got, err = clusterTLS(cfg, ClusterConfig{Endpoints: []string{"https://a:2379"}, CertFile: pki.ClientCert, KeyFile: pki.ClientKey})
	require.NoError(t, err)
	assert.NotNil(t, got.GetClientCertificate, "a client certificate")
}
