package supervisor

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/snapstore"
)

func TestAPIConfigValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  APIConfig
		want string // "" for valid, else part of the error
	}{
		{"disabled", APIConfig{}, ""},
		{"default", APIConfig{Listen: DefaultAPIListen}, ""},
		{"ipv6 loopback", APIConfig{Listen: "[::1]:2378"}, ""},
		{"localhost", APIConfig{Listen: "localhost:2378"}, ""},
		{"loopback with token", APIConfig{Listen: "127.0.0.1:2378", TokenFile: "t"}, ""},
		{"no port", APIConfig{Listen: "127.0.0.1"}, "want host:port"},
		{"flags without listener", APIConfig{TokenFile: "t"}, "--listen-api is empty"},
		{"all interfaces without TLS", APIConfig{Listen: ":2378", TokenFile: "t"}, "must use TLS"},
		{"public without TLS", APIConfig{Listen: "10.0.0.5:2378"}, "must use TLS"},
		{"public TLS without auth", APIConfig{Listen: "0.0.0.0:2378", CertFile: "c", KeyFile: "k"}, "need authentication"},
		{"public TLS and token", APIConfig{Listen: "0.0.0.0:2378", CertFile: "c", KeyFile: "k", TokenFile: "t"}, ""},
		{"public TLS and client CA", APIConfig{Listen: "0.0.0.0:2378", CertFile: "c", KeyFile: "k", ClientCAFile: "ca"}, ""},
		{"public TLS and read-only token only", APIConfig{Listen: "0.0.0.0:2378", CertFile: "c", KeyFile: "k", ReadOnlyTokenFile: "r"}, "only authorizes GET"},
		{"cert without key", APIConfig{Listen: "127.0.0.1:2378", CertFile: "c"}, "go together"},
		{"client CA without TLS", APIConfig{Listen: "127.0.0.1:2378", ClientCAFile: "ca"}, "needs TLS"},
	} {
		err := c.cfg.Validate()
		if c.want == "" {
			require.NoError(t, err, c.name)
		} else {
			require.ErrorContains(t, err, c.want, c.name)
		}
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

// The access rules: open on loopback without credentials; with credentials (or on another
// address) health is open, GETs take any credential, POSTs the full token or a client
// certificate.
func TestAPIAuthorize(t *testing.T) {
	const token, readToken = "0123456789abcdef-full", "0123456789abcdef-read"
	tokenFile := writeFile(t, "token", token+"\nignored second line\n")
	readFile := writeFile(t, "read", "  "+readToken+"  \n")

	open, err := loadAPIAuth(APIConfig{Listen: "127.0.0.1:2378"})
	require.NoError(t, err)
	auth, err := loadAPIAuth(APIConfig{Listen: "0.0.0.0:2378", CertFile: "c", KeyFile: "k", ClientCAFile: "ca",
		TokenFile: tokenFile, ReadOnlyTokenFile: readFile})
	require.NoError(t, err)
	require.NotContains(t, auth.describe(), token)

	verified := &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{}}}}
	req := func(header string, state *tls.ConnectionState) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/v1/status", nil)
		if header != "" {
			r.Header.Set("Authorization", header)
		}
		r.TLS = state
		return r
	}
	for _, c := range []struct {
		name   string
		a      *apiAuth
		r      *http.Request
		need   access
		status int
	}{
		{"loopback without credentials: open", open, req("", nil), accessWrite, 0},
		{"health is open", auth, req("", nil), accessPublic, 0},
		{"read without credential", auth, req("", nil), accessRead, http.StatusUnauthorized},
		{"write without credential", auth, req("", nil), accessWrite, http.StatusUnauthorized},
		{"full token reads", auth, req("Bearer "+token, nil), accessRead, 0},
		{"full token writes", auth, req("bearer "+token, nil), accessWrite, 0},
		{"read-only token reads", auth, req("Bearer "+readToken, nil), accessRead, 0},
		{"read-only token cannot write", auth, req("Bearer "+readToken, nil), accessWrite, http.StatusForbidden},
		{"wrong token", auth, req("Bearer "+token+"x", nil), accessRead, http.StatusUnauthorized},
		{"basic auth is not a token", auth, req("Basic "+token, nil), accessRead, http.StatusUnauthorized},
		{"verified client certificate writes", auth, req("", verified), accessWrite, 0},
		{"TLS without a client certificate", auth, req("", &tls.ConnectionState{}), accessWrite, http.StatusUnauthorized},
	} {
		status, msg := c.a.authorize(c.r, c.need)
		require.Equal(t, c.status, status, c.name)
		require.NotContains(t, msg, token, c.name)
	}

	_, err = loadAPIAuth(APIConfig{Listen: "127.0.0.1:2378", TokenFile: writeFile(t, "short", "short\n")})
	require.ErrorContains(t, err, "shorter than 16 bytes")
	_, err = loadAPIAuth(APIConfig{Listen: "127.0.0.1:2378", TokenFile: tokenFile, ReadOnlyTokenFile: tokenFile})
	require.ErrorContains(t, err, "the same token")
	_, err = loadAPIAuth(APIConfig{Listen: "127.0.0.1:2378", TokenFile: filepath.Join(t.TempDir(), "missing")})
	require.ErrorContains(t, err, "--api-token-file")
}

func TestParseRestoreRequest(t *testing.T) {
	for _, c := range []struct {
		body string
		want snapstore.Target
		err  string
	}{
		{"", snapstore.Target{}, ""},
		{"{}", snapstore.Target{}, ""},
		{`{"revision": 42}`, snapstore.Target{Revision: 42}, ""},
		{`{"time": "2026-11-25T15:04:05Z"}`, snapstore.Target{Time: mustTime(t, "2026-11-25T15:04:05Z")}, ""},
		{`{"revision": 42, "time": "2026-11-25T15:04:05Z"}`, snapstore.Target{}, "not both"},
		{`{"revision": -1}`, snapstore.Target{}, "revisions start at 1"},
		{`{"time": "yesterday"}`, snapstore.Target{}, "RFC 3339"},
		{`{"rev": 42}`, snapstore.Target{}, "unknown field"},
		{`[1]`, snapstore.Target{}, "must be JSON"},
	} {
		r := httptest.NewRequest(http.MethodPost, "/v1/restore", strings.NewReader(c.body))
		got, err := parseRestoreRequest(r)
		if c.err != "" {
			require.ErrorContains(t, err, c.err, c.body)
			continue
		}
		require.NoError(t, err, c.body)
		require.True(t, c.want.Time.Equal(got.Time), c.body)
		require.Equal(t, c.want.Revision, got.Revision, c.body)
	}
}

func TestGCDeletedCounts(t *testing.T) {
	s := &Supervisor{metrics: newMetrics()}
	s.GCDeleted(snapstore.KindFull, 2)
	s.GCDeleted(snapstore.KindFull, 1)
	s.GCDeleted(snapstore.KindDelta, 0)
	s.GCDeleted("other", 5) // not a kind: labels stay bounded
	require.Equal(t, 3.0, testutil.ToFloat64(s.metrics.gcDeleted.WithLabelValues("full")))
	require.Equal(t, 0.0, testutil.ToFloat64(s.metrics.gcDeleted.WithLabelValues("delta")))
	require.Equal(t, 2, testutil.CollectAndCount(s.metrics.gcDeleted))
}
