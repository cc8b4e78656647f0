package supervisor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultAPIListen is the API's default address: loopback only.
const DefaultAPIListen = "127.0.0.1:2378"

// APIConfig configures the HTTP API (docs/api.md).
type APIConfig struct {
	// Listen is the host:port to listen on; "" disables the API. An address that is not
	// loopback requires TLS and authentication.
	Listen string
	// CertFile and KeyFile are the server's TLS certificate and key (PEM); with them the API
	// serves HTTPS.
	CertFile, KeyFile string
	// ClientCAFile, when set, makes clients with a certificate signed by these CAs
	// (PEM) authorized for every endpoint.
	ClientCAFile string
	// TokenFile holds a bearer token (first line) authorized for every endpoint.
	TokenFile string
	// ReadOnlyTokenFile holds a bearer token authorized for the GET endpoints only.
	ReadOnlyTokenFile string
	// AllowedHosts are the names (or addresses), each optionally with a port, that clients
	// may send in the Host header besides the loopback names and the listener's own address:
	// the API refuses any other Host (DNS rebinding, docs/api.md).
	AllowedHosts []string
}

// Validate checks the configuration: it refuses an address that is not loopback without
// TLS and a way to authenticate mutating requests.
func (c APIConfig) Validate() error {
	if c.Listen == "" {
		if c.CertFile != "" || c.KeyFile != "" || c.ClientCAFile != "" || c.TokenFile != "" || c.ReadOnlyTokenFile != "" ||
			len(c.AllowedHosts) > 0 {
			return errors.New("API TLS, token or allowed-hosts flags given but --listen-api is empty (the API is disabled): give an address or drop them")
		}
		return nil
	}
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("--listen-api %q: want host:port, e.g. %s: %v", c.Listen, DefaultAPIListen, err)
	}
	for _, h := range c.AllowedHosts {
		if _, _, err := parseAllowedHost(h); err != nil {
			return err
		}
	}
	switch {
	case (c.CertFile == "") != (c.KeyFile == ""):
		return errors.New("--api-cert and --api-key go together: give both for TLS")
	case c.ClientCAFile != "" && c.CertFile == "":
		return errors.New("--api-client-ca needs TLS: give --api-cert and --api-key too")
	case c.ReadOnlyTokenFile != "" && c.TokenFile == "" && c.ClientCAFile == "":
		return errors.New("--api-read-only-token-file only authorizes GET requests: give --api-token-file or --api-client-ca " +
			"too, so that the mutating endpoints can be used")
	}
	if isLoopback(host) {
		return nil
	}
	if c.CertFile == "" {
		return fmt.Errorf("--listen-api %s is not a loopback address: the API must use TLS there (--api-cert, --api-key) and "+
			"authenticate clients (--api-client-ca or --api-token-file); or listen on 127.0.0.1", c.Listen)
	}
	if c.ClientCAFile == "" && c.TokenFile == "" {
		return fmt.Errorf("--listen-api %s is not a loopback address: its endpoints need authentication there: give "+
			"--api-client-ca (client certificates) or --api-token-file (a bearer token)", c.Listen)
	}
	return nil
}

// CheckFiles reads what the API loads at start (the token files, the TLS certificate and
// key, the client CAs) and checks it, without listening, so that a command can refuse a bad
// file before it creates anything. startAPI reads them again when it starts.
func (c APIConfig) CheckFiles() error {
	if c.Listen == "" {
		return nil
	}
	if _, err := loadAPIAuth(c); err != nil {
		return err
	}
	if _, err := apiTLS(c); err != nil {
		return err
	}
	return nil
}

// isLoopback reports whether host names only the loopback interface.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// apiServer is the HTTP API (docs/api.md): health, readiness, status, metrics, the status
// page, and snapshots and restores on request. It only translates HTTP into calls of the
// member it serves (apiMember: the Supervisor) and back.
//
// Run starts it with startAPI before anything else, so that health and status answer during
// validation and restore, and closes it (close) when it returns. Field by field:
type apiServer struct {
	// Set by startAPI, read-only after.
	member   apiMember
	store    *snapstore.Store    // the member's store: its URL and window (GET /v1/backups)
	gatherer prometheus.Gatherer // etcdbr's own metrics, served beside etcd's (the default registry)
	lg       *slog.Logger
	addr     string // the address the listener took ("" when the API is disabled)
	// srv serves the API (nil when it is disabled): its goroutine, started by startAPI,
	// runs until close shuts it down, and then closes done.
	srv  *http.Server
	done chan struct{}
}

// apiMember is what the API asks of the member it serves: the Supervisor.
type apiMember interface {
	// liveness says the lifecycle's state and the process ID (GET /healthz).
	liveness() (State, int)
	Readiness() []Check
	Status() Status
	// listStore lists the store, recording whether it answered.
	listStore(ctx context.Context) (fulls, deltas []catalog.Snapshot, err error)
	// refresh brings the metrics up to date before a scrape.
	refresh(now time.Time) (corrupt, serving bool)
	TakeFull(ctx context.Context) (catalog.Snapshot, error)
	FlushDeltas(ctx context.Context) (backup.FlushResult, error)
	RequestRestore(ctx context.Context, target catalog.Target) (RestoreStatus, error)
	WaitRestore(ctx context.Context, id int64) (RestoreStatus, error)
	// RequestClusterRestore records a whole-cluster restore intent in the store.
	RequestClusterRestore(ctx context.Context, target catalog.Target, by string) (catalog.Intent, error)
}

// startAPI loads the API's credentials and starts serving the Supervisor s with the
// configuration c (unless it is disabled). Requests' contexts end with ctx.
func startAPI(ctx context.Context, c APIConfig, s *Supervisor, lg *slog.Logger) (*apiServer, error) {
	a := &apiServer{member: s, store: s.cfg.Store, gatherer: s.metrics.reg, lg: lg}
	if c.Listen == "" {
		lg.Info("the HTTP API is disabled (--listen-api is empty)")
		return a, nil
	}
	auth, err := loadAPIAuth(c)
	if err != nil {
		return nil, err
	}
	tlsCfg, err := apiTLS(c)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return nil, fmt.Errorf("HTTP API: listen on %s: %w (change --listen-api, or give \"\" to disable the API)", c.Listen, err)
	}
	hosts, err := newHostGuard(c, ln.Addr().String())
	if err != nil {
		ln.Close()
		return nil, err
	}
	a.addr = ln.Addr().String()
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	a.srv = &http.Server{
		Handler:           a.guardHost(hosts, a.handler(auth)),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(lg.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	a.done = make(chan struct{})
	go func() {
		defer close(a.done)
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			lg.Error("the HTTP API stopped serving", "err", err)
		}
	}()
	scheme := "http"
	if tlsCfg != nil {
		scheme = "https"
	}
	lg.Info("HTTP API listening", "url", scheme+"://"+ln.Addr().String(), "authentication", auth.describe())
	return a, nil
}

// close stops the API, letting requests in flight finish for a few seconds.
func (a *apiServer) close() {
	if a.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.srv.Shutdown(ctx); err != nil {
		a.srv.Close()
	}
	<-a.done
}

// APIAddr returns the address the HTTP API listens on ("" before Run started it, or when it
// is disabled).
func (s *Supervisor) APIAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.apiAddr
}

// apiTLS returns the API's TLS configuration (nil without a certificate).
func apiTLS(c APIConfig) (*tls.Config, error) {
	if c.CertFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("--api-cert %q, --api-key %q: %w", c.CertFile, c.KeyFile, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.ClientCAFile != "" {
		pem, err := os.ReadFile(c.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("--api-client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--api-client-ca %q: no PEM certificate in it", c.ClientCAFile)
		}
		cfg.ClientCAs = pool
		// Health probes come without a certificate; the handlers decide what needs one.
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return cfg, nil
}
