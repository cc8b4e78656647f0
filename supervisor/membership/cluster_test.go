package membership

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdbr/etcdbr/internal/embeddedtest"
)

// startEtcd starts a real one-member etcd with cfg and stops it at the end of the test.
func startEtcd(t *testing.T, cfg *embed.Config) *embed.Etcd {
	t.Helper()
	e, err := embed.StartEtcd(cfg)
	require.NoError(t, err)
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(time.Minute):
		t.Fatal("etcd did not become ready")
	}
	return e
}

// Client against a real etcd: the probe, the linearizable list, and etcd's own answers to
// membership changes, each classified as Join takes it ("peer URL exists", "too many
// learners", "member not found"); an endpoint that does not answer is not a refusal.
func TestClientAgainstEtcd(t *testing.T) {
	t.Parallel()
	cfg := embeddedtest.NewConfig(t)
	e := startEtcd(t, cfg)
	ep := cfg.AdvertiseClientUrls[0].String()
	dead := embeddedtest.FreeURL(t, "http")
	cli, err := NewClient(ClientConfig{Endpoints: []string{dead.String(), ep}})
	require.NoError(t, err)
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	pctx, pcancel := context.WithTimeout(ctx, time.Second)
	answers := cli.Probe(pctx)
	pcancel()
	require.Len(t, answers, 2)
	assert.Error(t, answers[0].Err)
	assert.False(t, answers[0].Refused, "a dead endpoint is no refusal: %v", answers[0].Err)
	require.NoError(t, answers[1].Err)
	assert.Equal(t, uint64(e.Server.MemberID()), answers[1].Leader)
	assert.Equal(t, uint64(e.Server.Cluster().ID()), answers[1].ClusterID)
	require.Len(t, answers[1].Members, 1)
	assert.True(t, answers[1].Members[0].Started())

	id, ms, err := cli.MemberList(ctx, []string{ep})
	require.NoError(t, err)
	assert.Equal(t, uint64(e.Server.Cluster().ID()), id)
	require.Len(t, ms, 1)

	learner, err := cli.AddLearner(ctx, []string{ep}, []string{"http://127.0.0.1:1"})
	require.NoError(t, err)
	assert.True(t, learner.IsLearner)
	assert.False(t, learner.Started())

	_, err = cli.AddLearner(ctx, []string{ep}, []string{"http://127.0.0.1:1"})
	assert.True(t, IsExists(err), "%v", err)
	_, err = cli.AddLearner(ctx, []string{ep}, []string{"http://127.0.0.1:2"})
	assert.True(t, IsTooManyLearners(err), "%v", err)

	_, err = e.Server.PromoteMember(ctx, learner.ID)
	assert.True(t, IsLearnerNotReady(err), "%v", err)

	require.NoError(t, cli.Remove(ctx, []string{ep}, learner.ID))
	err = cli.Remove(ctx, []string{ep}, learner.ID)
	assert.True(t, IsMemberNotFound(err), "%v", err)
}

// A peer that requires client certificates and gets none answers: it refused this member's
// client, which is not "no answer" (what it holds is unknown, so no cluster is founded).
func TestClientRefusedByTLS(t *testing.T) {
	t.Parallel()
	pki := embeddedtest.NewPKI(t)
	cfg := embeddedtest.NewConfig(t)
	u := embeddedtest.FreeURL(t, "https")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{u}, []url.URL{u}
	cfg.ClientTLSInfo = transport.TLSInfo{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, TrustedCAFile: pki.CA, ClientCertAuth: true}
	startEtcd(t, cfg)

	noCert, err := (transport.TLSInfo{TrustedCAFile: pki.CA}).ClientConfig()
	require.NoError(t, err)
	cli, err := NewClient(ClientConfig{Endpoints: []string{u.String()}, TLS: noCert})
	require.NoError(t, err)
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	a := cli.Probe(ctx)[0]
	require.Error(t, a.Err)
	assert.True(t, a.Refused, "%v", a.Err)
	assert.ErrorContains(t, a.Err, "certificate required")
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	withCert, err := (transport.TLSInfo{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, TrustedCAFile: pki.CA}).ClientConfig()
	require.NoError(t, err)
	ok, err := NewClient(ClientConfig{Endpoints: []string{u.String()}, TLS: withCert})
	require.NoError(t, err)
	defer ok.Close()
	a = ok.Probe(ctx)[0]
	require.NoError(t, a.Err, "kubeadm's server certificate is valid for client auth")
}
