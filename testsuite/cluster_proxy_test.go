package testsuite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
)

// peerProxy stands in front of one member's peer listener: its peers reach the member
// through it (the member advertises the proxy's URL), so that the test can drop the peer
// traffic of a member without root. etcd's peer traffic is HTTP (raft message streams,
// pipelined messages, snapshots), and each raft request names its sender in the
// X-Server-From header: a proxy drops everything while its own member is cut off, and the
// requests of a member that is cut off, cutting the connections in flight at once.
type peerProxy struct {
	ln  net.Listener
	srv *http.Server
	rp  *httputil.ReverseProxy

	mu      sync.Mutex
	down    bool              // its member is cut off: everything is dropped
	refused map[string]bool   // the member IDs (hex) whose requests are dropped
	active  map[*proxied]bool // the requests in flight
	dropped map[string]int    // dropped requests by sender ("" when unnamed)
}

// proxied is a request in flight through a peerProxy.
type proxied struct {
	from   string
	cancel context.CancelFunc
}

// newPeerProxy starts a proxy to target (a peer URL) on a free loopback port.
func newPeerProxy(t testing.TB, target string) *peerProxy {
	t.Helper()
	to, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	p := &peerProxy{ln: ln, refused: map[string]bool{}, active: map[*proxied]bool{}, dropped: map[string]int{}}
	p.rp = &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(to) },
		FlushInterval: -1, // raft message streams are long responses, written message by message
		Transport:     &http.Transport{DisableCompression: true},
		ErrorLog:      log.New(io.Discard, "", 0),
	}
	p.srv = &http.Server{Handler: p, ErrorLog: log.New(io.Discard, "", 0)}
	go p.srv.Serve(ln) //nolint:errcheck // ends with ErrServerClosed
	t.Cleanup(func() { p.srv.Close() })
	return p
}

// URL is the proxy's URL: the member's peer URL as its peers reach it.
func (p *peerProxy) URL() string { return "http://" + p.ln.Addr().String() }

func (p *peerProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	from := r.Header.Get("X-Server-From")
	p.mu.Lock()
	if p.down || p.refused[from] {
		p.dropped[from]++
		p.mu.Unlock()
		panic(http.ErrAbortHandler) // the connection is dropped without an answer
	}
	ctx, cancel := context.WithCancel(r.Context())
	req := &proxied{from: from, cancel: cancel}
	p.active[req] = true
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.active, req)
		p.mu.Unlock()
		cancel()
	}()
	p.rp.ServeHTTP(w, r.WithContext(ctx))
	if ctx.Err() != nil && !errors.Is(r.Context().Err(), context.Canceled) {
		panic(http.ErrAbortHandler) // cut while streaming: drop the connection
	}
}

// set drops everything when down, else the requests of the members in refused, and cuts
// the requests in flight that are dropped from now on.
func (p *peerProxy) set(down bool, refused map[string]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down, p.refused = down, refused
	for req := range p.active {
		if down || refused[req.from] {
			req.cancel()
		}
	}
}

// droppedFrom counts the requests of member id (hex) the proxy dropped.
func (p *peerProxy) droppedFrom(id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropped[id]
}

// proxyPeers puts every member's peer URL behind a peerProxy; call it before the members
// first start (the proxies' URLs are the members' advertised peer URLs, which the cluster's
// membership records).
func (c *cluster) proxyPeers() {
	c.t.Helper()
	c.advertised = make([]string, len(c.members))
	c.proxies = make([]*peerProxy, len(c.members))
	for i, m := range c.members {
		c.proxies[i] = newPeerProxy(c.t, m.PeerURL)
		c.advertised[i] = c.proxies[i].URL()
	}
}

// memberID is member i's ID as etcd's peer requests name it (hex), once it serves.
func (c *cluster) memberID(i int) string {
	c.t.Helper()
	st, err := c.memberStatus(i)
	if err != nil {
		c.t.Fatalf("status of member %s: %v", c.members[i].Name, err)
	}
	return fmt.Sprintf("%x", st.Header.MemberId)
}

// cutOff drops all peer traffic of member i (whose ID is id), both ways, from now on, until
// heal: its clients and its etcdbr API still answer.
func (c *cluster) cutOff(i int, id string) {
	c.t.Helper()
	for j, p := range c.proxies {
		if j == i {
			p.set(true, nil)
		} else {
			p.set(false, map[string]bool{id: true})
		}
	}
}

// heal lets all peer traffic through again.
func (c *cluster) heal() {
	for _, p := range c.proxies {
		p.set(false, nil)
	}
}
