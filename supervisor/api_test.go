package supervisor

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
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
		{"allowed hosts", APIConfig{Listen: "127.0.0.1:2378", AllowedHosts: []string{"etcd-0.example.com", "proxy:8443", "10.0.0.5", "[fd00::5]:2378"}}, ""},
		{"allowed host with a scheme", APIConfig{Listen: "127.0.0.1:2378", AllowedHosts: []string{"http://etcd-0"}}, "not a plain host"},
		{"allowed host wildcard", APIConfig{Listen: "127.0.0.1:2378", AllowedHosts: []string{"*.example.com"}}, "not a plain host"},
		{"allowed host bad port", APIConfig{Listen: "127.0.0.1:2378", AllowedHosts: []string{"etcd-0:https"}}, "port is not a number"},
		{"allowed host empty", APIConfig{Listen: "127.0.0.1:2378", AllowedHosts: []string{""}}, "empty"},
		{"allowed hosts without listener", APIConfig{AllowedHosts: []string{"etcd-0"}}, "--listen-api is empty"},
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
		{"cluster restore on loopback without credentials: refused", open, req("", nil), accessCredential, http.StatusForbidden},
		{"cluster restore without credential", auth, req("", nil), accessCredential, http.StatusUnauthorized},
		{"cluster restore with the read-only token", auth, req("Bearer "+readToken, nil), accessCredential, http.StatusForbidden},
		{"cluster restore with the full token", auth, req("Bearer "+token, nil), accessCredential, 0},
		{"cluster restore with a verified client certificate", auth, req("", verified), accessCredential, 0},
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

func TestParseRestoreBody(t *testing.T) {
	for _, c := range []struct {
		body string
		want catalog.Target
		err  string
	}{
		{"{}", catalog.Target{}, ""},
		{" {}\r\n", catalog.Target{}, ""},
		{"", catalog.Target{}, "the body is empty"},
		{" \n", catalog.Target{}, "send one JSON object"},
		{`{"revision": 42}`, catalog.Target{Revision: 42}, ""},
		{`{"time": "2026-11-25T15:04:05Z"}`, catalog.Target{Time: mustTime(t, "2026-11-25T15:04:05Z")}, ""},
		{`{"revision": 42, "time": "2026-11-25T15:04:05Z"}`, catalog.Target{}, "not both"},
		{`{"revision": -1}`, catalog.Target{}, "revisions start at 1"},
		{`{"time": "yesterday"}`, catalog.Target{}, "RFC 3339"},
		{`{"rev": 42}`, catalog.Target{}, "unknown field"},
		{`[1]`, catalog.Target{}, "must be a JSON object"},
		{`null`, catalog.Target{}, "must be a JSON object"},
		{" \n{\"revision\": 42}\n ", catalog.Target{Revision: 42}, ""},
		{`{"revision":12} xyz`, catalog.Target{}, "more after its JSON object"},
		{`{"revision":12}{"revision":13}`, catalog.Target{}, "more after its JSON object"},
		{`{"revision":12`, catalog.Target{}, "must be JSON"},
		{"{\"revision\":12}\u00a0", catalog.Target{}, "more after its JSON object"}, // not JSON's white space
		{"\u00a0{\"revision\":12}", catalog.Target{}, "must be JSON"},
		{`{"revision": 0}`, catalog.Target{}, "revision 0: revisions start at 1; send {} for the newest point"},
		{`{"revision": null}`, catalog.Target{}, "revision null: want a whole number"},
		{`{"revision": 1.5}`, catalog.Target{}, "want a whole number"},
		{`{"revision": "12"}`, catalog.Target{}, "want a whole number"},
		{`{"time": ""}`, catalog.Target{}, `time "": want an RFC 3339 time`},
		{`{"time": null}`, catalog.Target{}, "time null: want an RFC 3339 time in a string"},
		{`{"time": 1764083045}`, catalog.Target{}, "in a string"},
		{`{"revision": 0, "time": "2026-11-25T15:04:05Z"}`, catalog.Target{}, "revision 0"},
	} {
		got, err := parseRestoreBody([]byte(c.body))
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
	s.GCDeleted(catalog.KindFull, 2)
	s.GCDeleted(catalog.KindFull, 1)
	s.GCDeleted(catalog.KindDelta, 0)
	s.GCDeleted("other", 5) // not a kind: labels stay bounded
	require.Equal(t, 3.0, testutil.ToFloat64(s.metrics.gcDeleted.WithLabelValues("full")))
	require.Equal(t, 0.0, testutil.ToFloat64(s.metrics.gcDeleted.WithLabelValues("delta")))
	require.Equal(t, 2, testutil.CollectAndCount(s.metrics.gcDeleted))
}

// Which Host headers the API answers: loopback names with the listener's port, the
// listener's own address (any IP address when it listens on all interfaces: an address
// cannot be rebound), and the names of --api-allowed-hosts; never another name.
func TestHostGuard(t *testing.T) {
	guard := func(listen, actual string, allowed ...string) *hostGuard {
		g, err := newHostGuard(APIConfig{Listen: listen, AllowedHosts: allowed}, actual)
		require.NoError(t, err)
		return g
	}
	loop := guard("127.0.0.1:0", "127.0.0.1:2378", "etcd-0.example.com", "proxy.example.com:8443")
	all := guard("0.0.0.0:2378", "[::]:2378")
	named := guard("etcd-1.internal:2378", "10.0.0.6:2378")
	ip := guard("10.0.0.5:2378", "10.0.0.5:2378")
	for _, c := range []struct {
		g    *hostGuard
		host string
		tls  bool
		want bool
	}{
		{loop, "127.0.0.1:2378", false, true},
		{loop, "localhost:2378", false, true},
		{loop, "LocalHost.:2378", false, true},
		{loop, "[::1]:2378", false, true},
		{loop, "127.0.0.2:2378", false, true},
		{loop, "localhost:2379", false, false}, // another port: another service's origin
		{loop, "localhost", false, false},      // port 80
		{loop, "evil.example:2378", false, false},
		{loop, "evil.example", false, false},
		{loop, "localhost.evil.example:2378", false, false},
		{loop, "", false, false},
		{loop, "[::1", false, false},
		{loop, "10.0.0.5:2378", false, false},
		{loop, "etcd-0.example.com", true, true}, // allowed name: any port
		{loop, "etcd-0.example.com:9999", false, true},
		{loop, "proxy.example.com:8443", false, true},
		{loop, "proxy.example.com:443", false, false},
		{loop, "proxy.example.com", false, false},
		{all, "10.0.0.5:2378", true, true},
		{all, "[fd00::5]:2378", true, true},
		{all, "localhost:2378", true, true},
		{all, "10.0.0.5:2379", true, false},
		{all, "etcd-0.example.com:2378", true, false},
		{named, "etcd-1.internal:2378", true, true},
		{named, "ETCD-1.internal:2378", true, true},
		{named, "etcd-2.internal:2378", true, false},
		{named, "127.0.0.1:2378", true, true},
		{ip, "10.0.0.5:2378", true, true},
		{ip, "10.0.0.6:2378", true, false},
		{ip, "rebound.evil.example:2378", true, false},
	} {
		require.Equal(t, c.want, c.g.allows(c.host, c.tls), "listener %s:%s, Host %q", c.g.listenHost, c.g.port, c.host)
	}
	require.Contains(t, loop.describe(), "localhost:2378")
	require.Contains(t, loop.describe(), "etcd-0.example.com")
	require.Contains(t, all.describe(), "any IP address")
}
