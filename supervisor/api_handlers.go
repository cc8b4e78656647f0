package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// maxRequestBody bounds a request's body.
const maxRequestBody = 64 << 10

// endpoint is one path of the API: what it needs and its handler per method.
type endpoint struct {
	path    string
	need    access
	methods map[string]http.HandlerFunc
	// jsonBody is true when its POST takes a JSON body (Content-Type: application/json
	// required, even when the body is empty); a POST without it takes no body.
	jsonBody bool
}

// handler routes the API's endpoints and the status page (docs/api.md).
func (a *apiServer) handler(auth *apiAuth) http.Handler {
	metrics := promhttp.HandlerFor(prometheus.Gatherers{prometheus.DefaultGatherer, a.gatherer},
		promhttp.HandlerOpts{ErrorLog: slogPrinter{a.lg}})
	endpoints := []endpoint{
		{"/healthz", accessPublic, map[string]http.HandlerFunc{http.MethodGet: a.handleHealth}, false},
		{"/readyz", accessPublic, map[string]http.HandlerFunc{http.MethodGet: a.handleReady}, false},
		{"/metrics", accessRead, map[string]http.HandlerFunc{http.MethodGet: func(w http.ResponseWriter, r *http.Request) {
			a.member.refresh(time.Now())
			metrics.ServeHTTP(w, r)
		}}, false},
		{"/v1/status", accessRead, map[string]http.HandlerFunc{http.MethodGet: a.handleStatus}, false},
		{"/v1/backups", accessRead, map[string]http.HandlerFunc{http.MethodGet: a.handleBackups}, false},
		{"/v1/snapshots/full", accessWrite, map[string]http.HandlerFunc{http.MethodPost: a.handleFull}, false},
		{"/v1/snapshots/delta", accessWrite, map[string]http.HandlerFunc{http.MethodPost: a.handleDelta}, false},
		{"/v1/restore", accessWrite, map[string]http.HandlerFunc{http.MethodPost: a.handleRestore}, true},
		{"/v1/cluster-restore", accessCredential, map[string]http.HandlerFunc{http.MethodPost: a.handleClusterRestore}, true},
	}
	mux := http.NewServeMux()
	for _, ep := range endpoints {
		mux.Handle(ep.path, a.route(auth, ep))
	}
	// The status page, at "/" only ("/{$}"): every other path stays a JSON 404.
	mux.Handle("/{$}", a.route(auth, endpoint{"/", accessRead, map[string]http.HandlerFunc{http.MethodGet: handlePage}, false}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no endpoint %s: see docs/api.md (GET / (the status page), GET /v1/status, GET /v1/backups, "+
			"POST /v1/snapshots/full, POST /v1/snapshots/delta, POST /v1/restore, POST /v1/cluster-restore, GET /healthz, GET /readyz, GET /metrics)", r.URL.Path))
	})
	return mux
}

// route enforces the endpoint's methods (405 with Allow; HEAD wherever GET), refuses
// mutating requests from web pages of other origins (403, api_guard.go), enforces access
// (401, 403) and the body a POST takes (415 without a JSON Content-Type where it takes JSON,
// 400 for a body where it takes none), and logs mutating requests (never their credentials).
func (a *apiServer) route(auth *apiAuth, ep endpoint) http.Handler {
	var allowed []string
	for m := range ep.methods {
		allowed = append(allowed, m)
		if m == http.MethodGet {
			allowed = append(allowed, http.MethodHead)
		}
	}
	slices.Sort(allowed)
	allow := strings.Join(allowed, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		method := r.Method
		if method == http.MethodHead {
			method = http.MethodGet
		}
		h, ok := ep.methods[method]
		if !ok {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s is not allowed: use %s", r.Method, ep.path, allow))
			return
		}
		refuse := func(status int, msg string) {
			a.lg.Warn("API request refused", "method", r.Method, "path", ep.path, "remote", r.RemoteAddr, "status", status)
			writeError(w, status, msg)
		}
		if ep.need == accessWrite || ep.need == accessCredential {
			if status, msg := checkBrowser(r); status != 0 {
				refuse(status, msg)
				return
			}
		}
		if status, msg := auth.authorize(r, ep.need); status != 0 {
			if status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="etcdbr"`)
			}
			refuse(status, msg)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxRequestBody)
		if method == http.MethodPost {
			if ep.jsonBody {
				if msg := checkJSONContentType(r); msg != "" {
					refuse(http.StatusUnsupportedMediaType, msg)
					return
				}
			} else if status, msg := requireNoBody(r); status != 0 {
				refuse(status, msg)
				return
			}
		}
		if ep.need == accessWrite {
			a.lg.Info("API request", "method", r.Method, "path", ep.path, "remote", r.RemoteAddr)
		}
		h(w, r)
	})
}

// requireNoBody reads the body of a POST that takes none: it returns 0, or the status and
// message of the refusal of a body (a body that would be ignored is refused, not dropped).
func requireNoBody(r *http.Request) (int, string) {
	body, err := io.ReadAll(r.Body)
	if status, msg := bodyReadError(r, err); status != 0 {
		return status, msg
	}
	if len(bytes.TrimSpace(body)) > 0 {
		return http.StatusBadRequest, fmt.Sprintf("%s %s takes no body and was sent %d bytes: send it empty (curl -X POST, without -d)",
			r.Method, r.URL.Path, len(body))
	}
	return 0, ""
}

// bodyReadError returns the status and message for an error reading a request's body (0
// without one).
func bodyReadError(r *http.Request, err error) (int, string) {
	var tooLarge *http.MaxBytesError
	switch {
	case err == nil:
		return 0, ""
	case errors.As(err, &tooLarge):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("%s %s: the body is larger than %d bytes: send a small JSON object",
			r.Method, r.URL.Path, tooLarge.Limit)
	default:
		return http.StatusBadRequest, fmt.Sprintf("%s %s: reading the body failed: %v: send it again", r.Method, r.URL.Path, err)
	}
}

// apiError is the body of every error answer.
type apiError struct {
	Status int    `json:"status"`
	Error  string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, apiError{Status: status, Error: msg})
}

// errorStatus maps an error of the supervisor to an HTTP status.
func errorStatus(err error) int {
	switch {
	case errors.Is(err, ErrRestoreRunning), errors.Is(err, ErrNotServing), errors.Is(err, ErrClusterMember),
		errors.Is(err, ErrNotLeader), errors.Is(err, ErrDeltasDisabled), errors.Is(err, backup.ErrSkipped), errors.Is(err, backup.ErrFenced),
		errors.Is(err, snapstore.ErrClusterMismatch), errors.Is(err, snapstore.ErrIntentRunning):
		return http.StatusConflict
	case errors.Is(err, catalog.ErrNoChain), errors.Is(err, ErrNoBackup):
		return http.StatusUnprocessableEntity
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable // a restore or a stop began meanwhile
	case backup.ReasonOf(err) == backup.ReasonStore, errors.Is(err, backup.ErrFlushAbandoned):
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

func (a *apiServer) handleHealth(w http.ResponseWriter, r *http.Request) {
	state, pid := a.member.liveness()
	writeJSON(w, http.StatusOK, map[string]any{"status": "alive", "state": state, "pid": pid})
}

// readyAnswer is the body of /readyz.
type readyAnswer struct {
	Ready bool `json:"ready"`
	// Failed says which checks failed and why.
	Failed string  `json:"failed,omitempty"`
	Checks []Check `json:"checks"`
}

func (a *apiServer) handleReady(w http.ResponseWriter, r *http.Request) {
	exclude := r.URL.Query()["exclude"]
	for _, x := range exclude {
		if !slices.Contains(metricReadyChecks, x) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("exclude=%q: no such check; the checks are %s", x, strings.Join(metricReadyChecks, ", ")))
			return
		}
	}
	ans := readyAnswer{Ready: true, Checks: []Check{}}
	var failed []string
	for _, c := range a.member.Readiness() {
		if slices.Contains(exclude, c.Name) {
			continue
		}
		ans.Checks = append(ans.Checks, c)
		if !c.OK {
			ans.Ready = false
			failed = append(failed, c.Name+": "+c.Message)
		}
	}
	ans.Failed = strings.Join(failed, "; ")
	status := http.StatusOK
	if !ans.Ready {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, ans)
}

func (a *apiServer) handleStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.member.Status())
}

// backupsAnswer is the body of GET /v1/backups.
type backupsAnswer struct {
	Store  string          `json:"store"`
	Full   []*ObjectStatus `json:"full"`
	Delta  []*ObjectStatus `json:"delta"`
	Window windowStatus    `json:"window"`
}

// windowStatus is catalog.Window in JSON.
type windowStatus struct {
	// Oldest and Newest are absent when the store has no full snapshot.
	Oldest *pointStatus `json:"oldest,omitempty"`
	Newest *pointStatus `json:"newest,omitempty"`
	// Gaps are breaks in the delta chain (points were lost); Pruned the ranges between two
	// full snapshots whose deltas retention deleted (expected).
	Gaps     []gapStatus     `json:"gaps"`
	Pruned   []gapStatus     `json:"pruned"`
	Overlaps []overlapStatus `json:"overlaps"`
	// Histories are the ranges between two histories: a restore to an earlier point
	// started a new history at Start (docs/kubernetes.md).
	Histories []historyStatus `json:"histories"`
	// Damaged are the objects a restore found damaged: the window leaves them out.
	Damaged []damageStatus `json:"damaged"`
}

type damageStatus struct {
	Key    string    `json:"key"`
	Found  time.Time `json:"found"`
	By     string    `json:"by"`
	Reason string    `json:"reason"`
}

type historyStatus struct {
	From     int64     `json:"from"`
	To       int64     `json:"to"`
	After    string    `json:"after"`
	Before   string    `json:"before"`
	Start    int64     `json:"start"`
	Began    time.Time `json:"began"`
	Revision int64     `json:"restored_revision"`
	Trigger  string    `json:"trigger,omitempty"`
}

type pointStatus struct {
	Revision int64     `json:"revision"`
	Time     time.Time `json:"time"`
	Key      string    `json:"key"`
}

type gapStatus struct {
	From   int64  `json:"from"`
	To     int64  `json:"to"`
	After  string `json:"after"`
	Before string `json:"before"`
}

type overlapStatus struct {
	A    string `json:"a"`
	B    string `json:"b"`
	From int64  `json:"from"`
	To   int64  `json:"to"`
}

func (a *apiServer) handleBackups(w http.ResponseWriter, r *http.Request) {
	fulls, deltas, err := a.member.listStore(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "cannot list the store: "+err.Error())
		return
	}
	now := time.Now()
	ans := backupsAnswer{Store: a.store.URL(), Full: []*ObjectStatus{}, Delta: []*ObjectStatus{},
		Window: windowStatus{Gaps: []gapStatus{}, Pruned: []gapStatus{}, Overlaps: []overlapStatus{}, Histories: []historyStatus{}, Damaged: []damageStatus{}}}
	for _, f := range fulls {
		ans.Full = append(ans.Full, objectStatus(f, now))
	}
	for _, d := range deltas {
		ans.Delta = append(ans.Delta, objectStatus(d, now))
	}
	win, err := a.store.Window(r.Context(), fulls, deltas)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "cannot read the store's records: "+err.Error())
		return
	}
	for _, d := range win.Damaged {
		ans.Window.Damaged = append(ans.Window.Damaged, damageStatus{Key: d.Key, Found: d.Found, By: d.By, Reason: d.Reason})
	}
	for _, b := range win.Boundaries {
		ans.Window.Histories = append(ans.Window.Histories, historyStatus{From: b.From, To: b.To, After: b.After, Before: b.Before,
			Start: b.History.Start, Began: b.History.Began, Revision: b.History.Revision, Trigger: b.History.Trigger})
	}
	if win.Oldest.Key != "" {
		ans.Window.Oldest = &pointStatus{Revision: win.Oldest.Revision, Time: win.Oldest.Time, Key: win.Oldest.Key}
		ans.Window.Newest = &pointStatus{Revision: win.Newest.Revision, Time: win.Newest.Time, Key: win.Newest.Key}
	}
	for _, g := range win.Gaps {
		ans.Window.Gaps = append(ans.Window.Gaps, gapStatus(g))
	}
	for _, g := range win.Pruned {
		ans.Window.Pruned = append(ans.Window.Pruned, gapStatus(g))
	}
	for _, o := range win.Overlaps {
		ans.Window.Overlaps = append(ans.Window.Overlaps, overlapStatus{A: o.A, B: o.B, From: o.From, To: o.To})
	}
	writeJSON(w, http.StatusOK, ans)
}

func (a *apiServer) handleFull(w http.ResponseWriter, r *http.Request) {
	snap, err := a.member.TakeFull(r.Context())
	if err != nil {
		writeError(w, errorStatus(err), "full snapshot: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"snapshot": objectStatus(snap, time.Time{})})
}

// deltaAnswer is the body of POST /v1/snapshots/delta.
type deltaAnswer struct {
	// Revision is etcd's revision when the request came: the store holds it now.
	Revision int64 `json:"revision"`
	// Deltas are the deltas written (none when the store already held Revision).
	Deltas []*ObjectStatus `json:"deltas"`
}

func (a *apiServer) handleDelta(w http.ResponseWriter, r *http.Request) {
	res, err := a.member.FlushDeltas(r.Context())
	if err != nil {
		writeError(w, errorStatus(err), "delta snapshot: "+err.Error())
		return
	}
	ans := deltaAnswer{Revision: res.Revision, Deltas: []*ObjectStatus{}}
	for _, d := range res.Deltas {
		ans.Deltas = append(ans.Deltas, objectStatus(d, time.Time{}))
	}
	writeJSON(w, http.StatusOK, ans)
}

// restoreRequest is the body of POST /v1/restore: a revision, a time, or neither (the
// newest point in the store). The fields stay raw until checked, so that a field given
// with a zero or null value ({"revision": 0}, {"time": ""}) is told from one left out.
type restoreRequest struct {
	Revision json.RawMessage `json:"revision"`
	Time     json.RawMessage `json:"time"`
}

// restoreBodyHelp says what the body of POST /v1/restore may be.
const restoreBodyHelp = `send one JSON object: {"revision": N}, {"time": "2026-11-25T15:04:05Z"}, or {} for the newest point`

// parseRestoreBody reads the restore target from the body of POST /v1/restore. The body is
// one JSON object and nothing after it but JSON white space; the newest point is asked for
// with {}, never by an empty body, and a field is either left out or holds a target.
func parseRestoreBody(body []byte) (catalog.Target, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	var raw json.RawMessage
	switch err := dec.Decode(&raw); {
	case errors.Is(err, io.EOF):
		return catalog.Target{}, fmt.Errorf("the body is empty: %s (an empty body is refused, so that no request "+
			"restores the newest point by leaving its target out)", restoreBodyHelp)
	case err != nil:
		return catalog.Target{}, fmt.Errorf("the body must be JSON: %s: %w", restoreBodyHelp, err)
	}
	if raw[0] != '{' {
		return catalog.Target{}, fmt.Errorf("the body must be a JSON object, not %s: %s", abbreviate(raw), restoreBodyHelp)
	}
	end := dec.InputOffset()
	if err := dec.Decode(&json.RawMessage{}); !errors.Is(err, io.EOF) {
		rest := bytes.Trim(body[end:], " \t\r\n") // JSON's white space, and only it
		return catalog.Target{}, fmt.Errorf("the body holds more after its JSON object (%q): %s, and nothing after it",
			abbreviate(rest), restoreBodyHelp)
	}
	var req restoreRequest
	strict := json.NewDecoder(bytes.NewReader(raw))
	strict.DisallowUnknownFields()
	if err := strict.Decode(&req); err != nil {
		return catalog.Target{}, fmt.Errorf("the body must be JSON: %s: %w", restoreBodyHelp, err)
	}
	var target catalog.Target
	if req.Revision != nil {
		if err := json.Unmarshal(req.Revision, &target.Revision); err != nil || string(req.Revision) == "null" {
			return catalog.Target{}, fmt.Errorf("revision %s: want a whole number, 1 or more: %s", abbreviate(req.Revision), restoreBodyHelp)
		}
		if target.Revision < 1 {
			return catalog.Target{}, fmt.Errorf("revision %d: revisions start at 1; send {} for the newest point", target.Revision)
		}
	}
	if req.Time != nil {
		var s string
		if err := json.Unmarshal(req.Time, &s); err != nil || string(req.Time) == "null" {
			return catalog.Target{}, fmt.Errorf("time %s: want an RFC 3339 time in a string, such as \"2026-11-25T15:04:05Z\": %s",
				abbreviate(req.Time), restoreBodyHelp)
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return catalog.Target{}, fmt.Errorf("time %q: want an RFC 3339 time such as 2026-11-25T15:04:05Z; send {} for the newest point", s)
		}
		target.Time = t
	}
	if err := target.Validate(); err != nil {
		return catalog.Target{}, err
	}
	return target, nil
}

// abbreviate returns b as a string of at most 40 bytes, for a message.
func abbreviate(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}

// readRestoreTarget reads the body of a restore request (POST /v1/restore and
// /v1/cluster-restore) and parses its target; on an error it answers it (the message
// prefixed with what) and returns false.
func readRestoreTarget(w http.ResponseWriter, r *http.Request, what string) (catalog.Target, bool) {
	body, err := io.ReadAll(r.Body)
	if status, msg := bodyReadError(r, err); status != 0 {
		writeError(w, status, msg)
		return catalog.Target{}, false
	}
	target, err := parseRestoreBody(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, what+": "+err.Error())
		return catalog.Target{}, false
	}
	return target, true
}

// restoreAnswer is the body of POST /v1/restore.
type restoreAnswer struct {
	Restore RestoreStatus `json:"restore"`
}

func (a *apiServer) handleRestore(w http.ResponseWriter, r *http.Request) {
	target, ok := readRestoreTarget(w, r, "restore")
	if !ok {
		return
	}
	var err error
	wait := false
	if v := r.URL.Query().Get("wait"); v != "" {
		if wait, err = strconv.ParseBool(v); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("restore: wait=%q: want true or false", v))
			return
		}
	}
	st, err := a.member.RequestRestore(r.Context(), target)
	if err != nil {
		writeError(w, errorStatus(err), "restore: "+err.Error())
		return
	}
	w.Header().Set("Location", "/v1/status")
	if !wait {
		writeJSON(w, http.StatusAccepted, restoreAnswer{Restore: st})
		return
	}
	st, err = a.member.WaitRestore(r.Context(), st.ID)
	switch {
	case err != nil:
		writeError(w, http.StatusGatewayTimeout, "restore: "+err.Error()+" (it goes on: see GET /v1/status)")
	case st.Phase == string(PhaseFailed):
		writeJSON(w, http.StatusInternalServerError, restoreAnswer{Restore: st})
	default:
		writeJSON(w, http.StatusOK, restoreAnswer{Restore: st})
	}
}

// clusterRestoreAnswer is the body of POST /v1/cluster-restore's answer.
type clusterRestoreAnswer struct {
	Intent catalog.Intent `json:"intent"`
}

// handleClusterRestore records a whole-cluster restore intent in the store (the body as
// POST /v1/restore's); every member carries it out. The answer is 202 with the intent;
// GET /v1/status shows its progress member by member.
func (a *apiServer) handleClusterRestore(w http.ResponseWriter, r *http.Request) {
	target, ok := readRestoreTarget(w, r, "cluster restore")
	if !ok {
		return
	}
	in, err := a.member.RequestClusterRestore(r.Context(), target, "API client "+r.RemoteAddr)
	if err != nil {
		writeError(w, errorStatus(err), "cluster restore: "+err.Error())
		return
	}
	a.lg.Warn("cluster restore recorded through the API: every member restores", "intent", in.ID, "target", in.Target().String(), "remote", r.RemoteAddr)
	w.Header().Set("Location", "/v1/status")
	writeJSON(w, http.StatusAccepted, clusterRestoreAnswer{Intent: in})
}

// slogPrinter logs promhttp's errors.
type slogPrinter struct{ lg *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.lg.Error("metrics: " + fmt.Sprint(v...)) }
