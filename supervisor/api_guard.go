package supervisor

import (
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// The API is for tools (curl, scripts, operators' programs), not for web pages. A page in a
// browser on the node can reach a loopback listener too: with a cross-site request (a form,
// fetch in no-cors mode, sendBeacon), or by DNS rebinding, where the page's own name is made
// to resolve to 127.0.0.1 so that the browser treats the API as same-origin. Without a
// credential on loopback nothing else would stop such a request, so:
//
//   - every request must name the API in its Host header (hostGuard): a loopback name or IP,
//     the listener's own address, or a name of --api-allowed-hosts. A rebound page's requests
//     carry the attacker's name and are refused;
//   - a mutating request must not come from another web origin (checkBrowser): an Origin
//     header other than the API's own, or Sec-Fetch-Site cross-site or same-site, is refused;
//   - an endpoint that takes a JSON body requires Content-Type: application/json, which a
//     page can only send to another origin after a CORS preflight the API never grants
//     (OPTIONS answers 405): this holds even for a browser that sends neither Origin nor
//     Sec-Fetch-Site.

// hostGuard decides which Host headers the API answers.
type hostGuard struct {
	// port is the listener's port.
	port string
	// listenHost is the host of --listen-api, lower case ("" for all interfaces).
	listenHost string
	// anyIP is true when the listener takes every interface (0.0.0.0, [::] or no host):
	// any IP address with the listener's port is then its own address.
	anyIP bool
	// names are the --api-allowed-hosts entries without a port (any port), ports those with
	// one (that port only).
	names map[string]bool
	ports map[string]bool
}

// newHostGuard builds the guard of a listener on listenAddr (the address it really listens
// on: the port is known even for --listen-api 127.0.0.1:0) from the configuration.
func newHostGuard(c APIConfig, listenAddr string) (*hostGuard, error) {
	_, port, err := net.SplitHostPort(listenAddr)
	if err != nil {
		return nil, fmt.Errorf("the API's listener address %q: %w", listenAddr, err)
	}
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return nil, fmt.Errorf("--listen-api %q: want host:port, e.g. %s: %w", c.Listen, DefaultAPIListen, err)
	}
	g := &hostGuard{port: port, listenHost: normalHost(host), names: map[string]bool{}, ports: map[string]bool{}}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		g.anyIP, g.listenHost = true, ""
	}
	for _, entry := range c.AllowedHosts {
		h, p, err := parseAllowedHost(entry)
		if err != nil {
			return nil, err
		}
		if p == "" {
			g.names[h] = true
		} else {
			g.ports[net.JoinHostPort(h, p)] = true
		}
	}
	return g, nil
}

// parseAllowedHost checks one --api-allowed-hosts entry: a host name or IP address,
// optionally with a port; it returns them normalized.
func parseAllowedHost(entry string) (host, port string, err error) {
	bad := func(why string) error {
		return fmt.Errorf("--api-allowed-hosts %q: %s: give a host name or IP address as clients send it in the Host header, "+
			"optionally with a port (etcd-0.example.com, etcd-0.example.com:2378, 10.0.0.5, [fd00::5]:2378)", entry, why)
	}
	if entry == "" {
		return "", "", bad("empty")
	}
	if strings.ContainsAny(entry, "/*?#@ ") {
		return "", "", bad("not a plain host (no scheme, path, wildcard or user)")
	}
	host, port = splitHostHeader(entry)
	if host == "" {
		return "", "", bad("no host")
	}
	if port != "" && strings.Trim(port, "0123456789") != "" {
		return "", "", bad("the port is not a number")
	}
	if strings.Contains(host, ":") && net.ParseIP(host) == nil {
		return "", "", bad("not a host name or IP address")
	}
	return host, port, nil
}

// splitHostHeader splits the value of a Host header (name, name:port, IPv4, IPv4:port, [IPv6]
// or [IPv6]:port) into the host, lower case and without a trailing dot or brackets, and the
// port ("" when absent).
func splitHostHeader(h string) (host, port string) {
	switch {
	case strings.HasPrefix(h, "["):
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return "", ""
		}
		host, rest := h[1:end], h[end+1:]
		if rest != "" {
			if !strings.HasPrefix(rest, ":") {
				return "", ""
			}
			port = rest[1:]
		}
		return normalHost(host), port
	case strings.Count(h, ":") == 1:
		host, port, _ = strings.Cut(h, ":")
		return normalHost(host), port
	case strings.Contains(h, ":"):
		return normalHost(h), "" // a bare IPv6 address
	default:
		return normalHost(h), ""
	}
}

// normalHost lower-cases a host and drops a trailing dot (a fully qualified name).
func normalHost(h string) string {
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// allows reports whether a request whose Host header is hostHeader, received with or without
// TLS, is meant for this API.
func (g *hostGuard) allows(hostHeader string, tls bool) bool {
	host, port := splitHostHeader(hostHeader)
	if host == "" {
		return false
	}
	if port == "" {
		port = "80"
		if tls {
			port = "443"
		}
	}
	if g.names[host] || g.ports[net.JoinHostPort(host, port)] {
		return true
	}
	if port != g.port {
		return false
	}
	ip := net.ParseIP(host)
	switch {
	case host == "localhost", ip != nil && ip.IsLoopback():
		return true
	case g.anyIP:
		// An IP address cannot be rebound: only a name in the Host header can come from a
		// page whose DNS the attacker controls.
		return ip != nil
	case ip != nil && g.listenHost != "":
		lip := net.ParseIP(g.listenHost)
		return lip != nil && lip.Equal(ip)
	default:
		return host == g.listenHost
	}
}

// describe says which Host headers are answered, for a refusal's message.
func (g *hostGuard) describe() string {
	ways := []string{"localhost:" + g.port, "127.0.0.1:" + g.port, "[::1]:" + g.port}
	switch {
	case g.anyIP:
		ways = append(ways, "any IP address of this machine with port "+g.port)
	case g.listenHost != "" && !isLoopback(g.listenHost):
		ways = append(ways, net.JoinHostPort(g.listenHost, g.port))
	}
	var extra []string
	for n := range g.names {
		extra = append(extra, n)
	}
	for hp := range g.ports {
		extra = append(extra, hp)
	}
	slices.Sort(extra)
	ways = append(ways, extra...)
	return strings.Join(ways, ", ")
}

// guardHost refuses, with 403, every request whose Host header does not name the API.
func (a *apiServer) guardHost(g *hostGuard, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.allows(r.Host, r.TLS != nil) {
			next.ServeHTTP(w, r)
			return
		}
		a.lg.Warn("API request refused: foreign Host header", "method", r.Method, "path", r.URL.Path,
			"remote", r.RemoteAddr, "host", r.Host, "status", http.StatusForbidden)
		writeError(w, http.StatusForbidden, fmt.Sprintf("Host %q is not an address of this API (a web page reaching it by "+
			"DNS rebinding sends its own name): call it as %s, or, when clients use another name (a proxy, a DNS name of "+
			"this machine), add that name to --api-allowed-hosts", r.Host, g.describe()))
	})
}

// checkBrowser refuses a mutating request that a web page of another origin sent: it
// returns 0, or the HTTP status and message of the refusal. Tools such as curl send neither
// Origin nor Sec-Fetch-Site. The API's own origin serves one page, the status page, which
// only reads (GET) and sends no POST; a request from it is not another origin's, so it
// passes.
func checkBrowser(r *http.Request) (int, string) {
	const fix = "the API's mutating endpoints take requests from tools (curl, scripts), not from web pages: " +
		"send the request from a tool, without an Origin header"
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "", "same-origin", "none":
	default:
		return http.StatusForbidden, fmt.Sprintf("%s %s came from a web page (Sec-Fetch-Site: %s): %s", r.Method, r.URL.Path, site, fix)
	}
	origin, ok := r.Header["Origin"]
	if !ok {
		return 0, ""
	}
	if len(origin) == 1 && sameOrigin(origin[0], r) {
		return 0, ""
	}
	return http.StatusForbidden, fmt.Sprintf("%s %s came from a web page of another origin (Origin: %s): %s",
		r.Method, r.URL.Path, strings.Join(origin, ", "), fix)
}

// sameOrigin reports whether origin is the API's own: the scheme it was reached with and
// the host of the request's (already checked) Host header.
func sameOrigin(origin string, r *http.Request) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || u.Path != "" || u.User != nil || u.RawQuery != "" {
		return false // "null" (a sandboxed page, a file) and anything that is not an origin
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if !strings.EqualFold(u.Scheme, scheme) {
		return false
	}
	defaultPort := map[string]string{"http": "80", "https": "443"}[scheme]
	oh, op := splitHostHeader(u.Host)
	rh, rp := splitHostHeader(r.Host)
	if op == "" {
		op = defaultPort
	}
	if rp == "" {
		rp = defaultPort
	}
	return oh != "" && oh == rh && op == rp
}

// checkJSONContentType returns "" when r declares a JSON body, else the refusal's message.
func checkJSONContentType(r *http.Request) string {
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err == nil && mt == "application/json" {
		return ""
	}
	got := "no Content-Type"
	if ct != "" {
		got = fmt.Sprintf("Content-Type %q", ct)
	}
	return fmt.Sprintf("%s %s takes a JSON body and was sent with %s: send \"Content-Type: application/json\" "+
		"(curl: --json '{...}', or -H 'Content-Type: application/json'), also with an empty body", r.Method, r.URL.Path, got)
}
