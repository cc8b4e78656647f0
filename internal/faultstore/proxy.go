package faultstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"
)

// Op is the kind of a store request, as the proxy tells it from an S3 request.
type Op string

// The kinds of requests. A multipart upload's requests (create, parts, complete) are all
// OpPut; its abort is OpDelete.
const (
	OpPut    Op = "put"
	OpGet    Op = "get"
	OpHead   Op = "head"
	OpList   Op = "list"
	OpDelete Op = "delete"
)

// Kind is what a fault does to the request it hits.
type Kind string

// The faults.
const (
	// Latency holds the request for Fault.Delay, then forwards it.
	Latency Kind = "latency"
	// Status answers Fault.Status (500, 502, 503...) with an S3 error body, without
	// forwarding the request.
	Status Kind = "status"
	// SlowDown answers 503 with S3's SlowDown error (throttling).
	SlowDown Kind = "slowdown"
	// TooSkewed answers 403 with S3's RequestTimeTooSkewed error and a Date header
	// Fault.Skew away from now, as a server whose clock disagrees with the client's.
	TooSkewed Kind = "too-skewed"
	// SkewDate forwards the request and moves the answer's Date header by Fault.Skew.
	SkewDate Kind = "skew-date"
	// ResetRequest forwards the first Fault.After bytes of the request's body, then resets
	// the client's connection (TCP RST) and abandons the request to the server.
	ResetRequest Kind = "reset-request"
	// ResetResponse forwards the answer's headers and the first Fault.After bytes of its
	// body, then resets the connection.
	ResetResponse Kind = "reset-response"
	// Truncate forwards the answer's headers (its Content-Length kept) and the first
	// Fault.After bytes of its body, then closes the connection cleanly.
	//
	// With After 0, ResetResponse and Truncate send nothing of the answer: the server
	// applied the request (stored or deleted the object) and the client never learns it.
	Truncate Kind = "truncate"
	// Corrupt flips (every bit of) the byte at offset Fault.After of the answer's body, its
	// length and headers kept; of an upload (OpPut), of the request's body instead: the
	// server receives a damaged object.
	Corrupt Kind = "corrupt"
	// Stall forwards the answer's headers and the first Fault.After bytes of its body, then
	// sends nothing for Fault.Delay, then resets the connection. Other requests than reads and
	// listings (uploads, deletes: no body to answer) stall before they are forwarded: the
	// server gets nothing.
	Stall Kind = "stall"
	// Unanswered reads the whole request's body, then answers nothing for Fault.Delay, then
	// resets the connection; the server gets nothing. An upload sent in full whose answer
	// never comes (a load balancer or server that hangs after the body).
	Unanswered Kind = "unanswered"
)

// Fault is one fault and its parameters; which of them count depends on Kind.
type Fault struct {
	Kind   Kind
	Status int           // Status
	Delay  time.Duration // Latency, Stall, Unanswered
	After  int64         // ResetRequest, ResetResponse, Truncate, Corrupt, Stall: a byte offset
	Skew   time.Duration // TooSkewed, SkewDate
}

// String names the fault with its parameters, for logs and tables.
func (f Fault) String() string {
	switch f.Kind {
	case Latency:
		return fmt.Sprintf("latency %v", f.Delay)
	case Status:
		return fmt.Sprintf("%d", f.Status)
	case TooSkewed, SkewDate:
		return fmt.Sprintf("%s %v", f.Kind, f.Skew)
	case Stall:
		return fmt.Sprintf("stall %v at byte %d", f.Delay, f.After)
	case Unanswered:
		return fmt.Sprintf("unanswered %v", f.Delay)
	case ResetRequest, ResetResponse, Truncate, Corrupt:
		return fmt.Sprintf("%s at byte %d", f.Kind, f.After)
	}
	return string(f.Kind)
}

// Rule picks requests and the fault they get.
type Rule struct {
	// Ops are the kinds of requests the rule picks; empty: every kind.
	Ops []Op
	// Key, when set, must occur in the request's object key (for a listing: its prefix),
	// e.g. "full/" or "delta/".
	Key string
	// Skip is how many picked requests pass untouched before the first fault.
	Skip int
	// Times is how many requests get the fault; 0 or less: every picked request until the
	// rules are replaced.
	Times int
	// Fault is what the picked requests get.
	Fault Fault
}

func (r Rule) picks(op Op, key string) bool {
	if len(r.Ops) > 0 && !contains(r.Ops, op) {
		return false
	}
	return r.Key == "" || strings.Contains(key, r.Key)
}

func contains(ops []Op, op Op) bool {
	for _, o := range ops {
		if o == op {
			return true
		}
	}
	return false
}

// Request is one request the proxy saw.
type Request struct {
	At     time.Time // when it arrived
	Done   time.Time // when the proxy was done with it
	Op     Op
	Method string
	Key    string // the object key (for a listing: its prefix), the bucket's name left out
	Fault  Kind   // the fault it got; "" for none
	// Status is the status the client received (0: the connection was cut before an answer).
	Status int
}

// Proxy is the faulty network in front of one object-storage server.
//
// Start creates it and starts serving; Close stops it (the test's Cleanup, usually). Set
// and Clear may be called at any time from any goroutine; rules apply to requests that
// arrive after the call.
type Proxy struct {
	target    *url.URL
	listener  net.Listener
	server    *http.Server
	transport *http.Transport
	log       *slog.Logger
	closed    chan struct{} // closed by Close: ends stalls
	closeOnce sync.Once

	// mu guards the rules, their counts and the request log.
	mu       sync.Mutex
	rules    []Rule
	picked   []int // per rule: requests it picked
	faulted  []int // per rule: faults it injected
	requests []Request
	changed  chan struct{} // closed and replaced when a request is recorded
}

// Start starts a proxy on a free loopback port that forwards to target (the server's
// endpoint, http://host:port). log receives one line per fault (nil: none).
func Start(target string, log *slog.Logger) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("faultstore: target %q: %w", target, err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultstore: listen: %w", err)
	}
	p := &Proxy{
		target:    u,
		listener:  ln,
		transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 16},
		log:       log,
		closed:    make(chan struct{}),
		changed:   make(chan struct{}),
	}
	p.server = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.server.Serve(ln) }()
	return p, nil
}

// URL is the proxy's endpoint, http://127.0.0.1:port: the endpoint for the store URL.
func (p *Proxy) URL() string {
	return "http://" + p.listener.Addr().String()
}

// Close stops the proxy: it ends stalls and closes every connection.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() { close(p.closed) })
	err := p.server.Close()
	p.transport.CloseIdleConnections()
	return err
}

// Set replaces the rules. A request gets the fault of the first rule that picks it and has
// faults left.
func (p *Proxy) Set(rules ...Rule) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = append([]Rule(nil), rules...)
	p.picked = make([]int, len(rules))
	p.faulted = make([]int, len(rules))
}

// Clear removes every rule: requests pass untouched from now on.
func (p *Proxy) Clear() {
	p.Set()
}

// Requests returns every request finished so far, in the order they arrived. A request is
// in it once the proxy is done with it, which can be after its client has moved on (a
// stalled or reset request whose client gave up): use Wait for one that must be there.
func (p *Proxy) Requests() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	reqs := append([]Request(nil), p.requests...)
	sort.SliceStable(reqs, func(i, j int) bool { return reqs[i].At.Before(reqs[j].At) })
	return reqs
}

// Wait waits until cond holds for the requests seen so far, or ctx is done.
func (p *Proxy) Wait(ctx context.Context, cond func([]Request) bool) error {
	for {
		p.mu.Lock()
		ok := cond(p.requests)
		changed := p.changed
		p.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("faultstore: waiting for requests: %w", ctx.Err())
		}
	}
}

// fault returns the fault for a request (ok false: none).
func (p *Proxy) fault(op Op, key string) (Fault, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, r := range p.rules {
		if !r.picks(op, key) {
			continue
		}
		p.picked[i]++
		if p.picked[i] <= r.Skip || (r.Times > 0 && p.faulted[i] >= r.Times) {
			continue
		}
		p.faulted[i]++
		return r.Fault, true
	}
	return Fault{}, false
}

func (p *Proxy) record(req Request) {
	req.Done = time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests = append(p.requests, req)
	close(p.changed)
	p.changed = make(chan struct{})
}

// classify tells the kind and object key of an S3 request (path-style: /bucket/key).
func classify(r *http.Request) (Op, string) {
	_, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	q := r.URL.Query()
	switch r.Method {
	case http.MethodGet:
		if key == "" {
			return OpList, q.Get("prefix")
		}
		return OpGet, key
	case http.MethodHead:
		return OpHead, key
	case http.MethodDelete:
		return OpDelete, key
	case http.MethodPost:
		if q.Has("delete") {
			return OpDelete, key
		}
	}
	return OpPut, key
}

// ServeHTTP forwards one request, with its fault.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	op, key := classify(r)
	req := Request{At: time.Now(), Op: op, Method: r.Method, Key: key}
	f, faulty := p.fault(op, key)
	if faulty {
		req.Fault = f.Kind
		p.log.Info("injecting a fault", "fault", f.String(), "op", op, "key", key)
	}
	defer func() { p.record(req) }()

	switch {
	case faulty && f.Kind == Latency:
		select {
		case <-time.After(f.Delay):
		case <-r.Context().Done():
			return
		case <-p.closed:
			return
		}
	case faulty && (f.Kind == Status || f.Kind == SlowDown || f.Kind == TooSkewed):
		req.Status = p.answerError(w, r, f)
		return
	case faulty && f.Kind == Stall && op != OpGet && op != OpList:
		p.stall(r.Context(), f.Delay)
		p.reset(w)
		return
	case faulty && f.Kind == Unanswered:
		_, _ = io.Copy(io.Discard, r.Body)
		p.stall(r.Context(), f.Delay)
		p.reset(w)
		return
	}

	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = p.target.Scheme, p.target.Host
	out.Host = r.Host // the client signed the proxy's host
	out.Header.Del("Connection")
	if r.ContentLength == 0 {
		out.Body = nil
	}
	if faulty && f.Kind == Corrupt && op == OpPut && out.Body != nil {
		out.Body = io.NopCloser(&flipper{r: r.Body, at: f.After})
	}
	if faulty && f.Kind == ResetRequest {
		// The server gets the first bytes and then a broken request; the client a reset.
		out.Body = io.NopCloser(io.MultiReader(io.LimitReader(r.Body, f.After), errReader{errors.New("cut by the fault proxy")}))
		resp, err := p.transport.RoundTrip(out)
		if err == nil {
			resp.Body.Close()
		}
		p.reset(w)
		return
	}
	resp, err := p.transport.RoundTrip(out)
	if err != nil {
		p.log.Warn("forwarding failed", "op", op, "key", key, "err", err)
		http.Error(w, err.Error(), http.StatusBadGateway)
		req.Status = http.StatusBadGateway
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	if resp.ContentLength >= 0 {
		w.Header().Set("Content-Length", fmt.Sprint(resp.ContentLength))
	}
	if faulty && f.After == 0 && (f.Kind == ResetResponse || f.Kind == Truncate) {
		req.Status = 0
		p.cut(w, f.Kind == ResetResponse)
		return
	}
	if faulty && f.Kind == SkewDate {
		w.Header().Set("Date", time.Now().Add(f.Skew).UTC().Format(http.TimeFormat))
	}
	w.WriteHeader(resp.StatusCode)
	req.Status = resp.StatusCode
	if r.Method == http.MethodHead {
		return
	}
	if !faulty || (f.Kind != ResetResponse && f.Kind != Truncate && f.Kind != Corrupt && f.Kind != Stall) {
		_, _ = io.Copy(w, resp.Body)
		return
	}
	if f.Kind == Corrupt {
		if op == OpPut {
			_, _ = io.Copy(w, resp.Body)
			return
		}
		_, _ = io.Copy(w, &flipper{r: resp.Body, at: f.After})
		return
	}
	_, _ = io.Copy(w, io.LimitReader(resp.Body, f.After))
	_ = http.NewResponseController(w).Flush()
	switch f.Kind {
	case Truncate:
		p.cut(w, false)
	case Stall:
		p.stall(r.Context(), f.Delay)
		p.reset(w)
	default:
		p.reset(w)
	}
}

// stall waits for d, or until the client gives up or the proxy closes.
func (p *Proxy) stall(ctx context.Context, d time.Duration) {
	select {
	case <-time.After(d):
	case <-ctx.Done():
	case <-p.closed:
	}
}

// answerError answers f's error without forwarding the request, and returns the status.
func (p *Proxy) answerError(w http.ResponseWriter, r *http.Request, f Fault) int {
	status, code, msg := f.Status, "InternalError", "We encountered an internal error, please try again."
	switch {
	case f.Kind == SlowDown:
		status, code, msg = http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate."
	case f.Kind == TooSkewed:
		status, code, msg = http.StatusForbidden, "RequestTimeTooSkewed",
			"The difference between the request time and the server's time is too large."
		w.Header().Set("Date", time.Now().Add(f.Skew).UTC().Format(http.TimeFormat))
	case status == http.StatusBadGateway:
		code, msg = "BadGateway", "The gateway could not reach the server."
	case status == http.StatusServiceUnavailable:
		code, msg = "ServiceUnavailable", "The service is unavailable, please try again."
	}
	body := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
		`<Error><Code>%s</Code><Message>%s</Message><Resource>%s</Resource><RequestId>faultstore</RequestId></Error>`,
		code, msg, r.URL.Path)
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.Header().Set("x-amz-request-id", "faultstore")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = io.WriteString(w, body)
	}
	return status
}

// reset cuts the client's connection with a TCP RST.
func (p *Proxy) reset(w http.ResponseWriter) { p.cut(w, true) }

// cut closes the client's connection: with a reset (rst), or cleanly.
func (p *Proxy) cut(w http.ResponseWriter, rst bool) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		p.log.Warn("cannot cut the connection", "err", err)
		return
	}
	if tcp, ok := conn.(*net.TCPConn); ok && rst {
		_ = tcp.SetLinger(0)
	}
	_ = conn.Close()
}

// errReader fails every Read with err.
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// flipper passes r through with the byte at offset at inverted.
type flipper struct {
	r   io.Reader
	at  int64
	off int64
}

func (f *flipper) Read(b []byte) (int, error) {
	n, err := f.r.Read(b)
	if i := f.at - f.off; i >= 0 && i < int64(n) {
		b[i] ^= 0xff
	}
	f.off += int64(n)
	return n, err
}
