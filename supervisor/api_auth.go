package supervisor

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
)

// minTokenLength is the shortest bearer token accepted.
const minTokenLength = 16

// access is what an endpoint needs.
type access int

const (
	accessPublic access = iota // health and readiness: always open
	accessRead                 // GET endpoints: any credential
	accessWrite                // POST endpoints: a full credential (not the read-only token)
	// accessCredential: a full credential even on loopback, where the API may run without
	// any (a whole-cluster restore wipes every member's data: only an authenticated client
	// may ask for it).
	accessCredential
)

// apiAuth decides who may call what. Without any credential configured (which Validate
// allows only on loopback) everything is open; with one, every endpoint but health and
// readiness needs a client certificate signed by the client CA or a bearer token, and the
// read-only token only opens the GET endpoints.
type apiAuth struct {
	required  bool
	clientCA  bool
	token     *[sha256.Size]byte // nil when not configured
	readToken *[sha256.Size]byte
}

// loadAPIAuth reads the tokens.
func loadAPIAuth(c APIConfig) (*apiAuth, error) {
	a := &apiAuth{clientCA: c.ClientCAFile != ""}
	var err error
	if c.TokenFile != "" {
		if a.token, err = readToken("--api-token-file", c.TokenFile); err != nil {
			return nil, err
		}
	}
	if c.ReadOnlyTokenFile != "" {
		if a.readToken, err = readToken("--api-read-only-token-file", c.ReadOnlyTokenFile); err != nil {
			return nil, err
		}
		if a.token != nil && *a.token == *a.readToken {
			return nil, fmt.Errorf("--api-token-file and --api-read-only-token-file hold the same token: give the read-only one its own")
		}
	}
	host, _, _ := net.SplitHostPort(c.Listen)
	a.required = a.clientCA || a.token != nil || a.readToken != nil || !isLoopback(host)
	return a, nil
}

// readToken reads the token on the first line of path and returns its SHA-256 (the token
// itself is not kept, and never logged).
func readToken(flag, path string) (*[sha256.Size]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	tok := strings.TrimSpace(line)
	if len(tok) < minTokenLength {
		return nil, fmt.Errorf("%s %q: the token on its first line is shorter than %d bytes: use a long random one (e.g. `openssl rand -hex 32`)",
			flag, path, minTokenLength)
	}
	sum := sha256.Sum256([]byte(tok))
	return &sum, nil
}

// describe says how clients authenticate, for the log (no secret).
func (a *apiAuth) describe() string {
	if !a.required {
		return "none (loopback only)"
	}
	var ways []string
	if a.clientCA {
		ways = append(ways, "client certificate")
	}
	if a.token != nil {
		ways = append(ways, "bearer token")
	}
	if a.readToken != nil {
		ways = append(ways, "read-only bearer token (GET)")
	}
	return strings.Join(ways, ", ")
}

// authorize decides whether r may use an endpoint that needs need: it returns 0, or the
// HTTP status and message of the refusal.
func (a *apiAuth) authorize(r *http.Request, need access) (int, string) {
	if need == accessCredential && !a.required {
		return http.StatusForbidden, "this endpoint needs an authenticated client, and this API has no credentials configured: " +
			"start etcdbr run with --api-token-file or --api-client-ca (or use etcdbr cluster restore --store URL)"
	}
	if need == accessPublic || !a.required {
		return 0, ""
	}
	if a.clientCA && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		return 0, ""
	}
	tok, ok := bearerToken(r)
	if !ok {
		return http.StatusUnauthorized, "authentication required: " + a.howTo()
	}
	sum := sha256.Sum256([]byte(tok))
	switch {
	case a.token != nil && subtle.ConstantTimeCompare(sum[:], a.token[:]) == 1:
		return 0, ""
	case a.readToken != nil && subtle.ConstantTimeCompare(sum[:], a.readToken[:]) == 1:
		if need == accessRead {
			return 0, ""
		}
		return http.StatusForbidden, "the read-only token only opens GET endpoints: use the token of --api-token-file or a client certificate"
	}
	return http.StatusUnauthorized, "the bearer token is not valid: " + a.howTo()
}

// howTo says which credentials the API accepts.
func (a *apiAuth) howTo() string {
	switch {
	case a.clientCA && a.token != nil:
		return "present a client certificate signed by --api-client-ca, or send \"Authorization: Bearer <token>\""
	case a.clientCA:
		return "present a client certificate signed by --api-client-ca"
	default:
		return "send \"Authorization: Bearer <token>\" with the token of --api-token-file"
	}
}

// bearerToken returns the token of an "Authorization: Bearer" header.
func bearerToken(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}
