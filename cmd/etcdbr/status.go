package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
	"github.com/etcdbr/etcdbr/supervisor"
)

// StatusCmd is `etcdbr status`.
type StatusCmd struct {
	API           string        `name:"api" default:"http://127.0.0.1:2378" help:"URL of the running etcdbr's HTTP API (its --listen-api)." env:"ETCDBR_API"`
	APITokenFile  string        `name:"api-token-file" help:"File whose first line is the bearer token to send (the token of etcdbr run's --api-token-file or --api-read-only-token-file)." env:"ETCDBR_API_TOKEN_FILE" type:"path"`
	APICACert     string        `name:"api-cacert" help:"CA certificates (PEM) that signed the API's TLS certificate (an https --api)." env:"ETCDBR_API_CACERT" type:"path"`
	APIClientCert string        `name:"api-client-cert" help:"Client certificate (PEM) to present to an API that authenticates clients by certificate (etcdbr run's --api-client-ca signed it)." env:"ETCDBR_API_CLIENT_CERT" type:"path"`
	APIClientKey  string        `name:"api-client-key" help:"Key (PEM) of --api-client-cert." env:"ETCDBR_API_CLIENT_KEY" type:"path"`
	JSON          bool          `name:"json" help:"Print the raw JSON: {\"status\": GET /v1/status, \"backups\": GET /v1/backups}." env:"ETCDBR_JSON"`
	Timeout       time.Duration `default:"30s" help:"How long to wait for the API's answers." env:"ETCDBR_STATUS_TIMEOUT"`
}

// statusClient reads a running etcdbr's API.
type statusClient struct {
	base  *url.URL
	token string
	http  *http.Client
}

// newStatusClient checks the flags and builds the client.
func (c *StatusCmd) newStatusClient() (*statusClient, error) {
	u, err := url.Parse(strings.TrimSuffix(c.API, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usageErrorf("--api %q: want the URL of the API, e.g. http://127.0.0.1:2378", c.API)
	}
	sc := &statusClient{base: u, http: &http.Client{Timeout: c.Timeout}}
	if c.APITokenFile != "" {
		raw, err := os.ReadFile(c.APITokenFile)
		if err != nil {
			return nil, usageErrorf("--api-token-file: %w", err)
		}
		line, _, _ := strings.Cut(string(raw), "\n")
		if sc.token = strings.TrimSpace(line); sc.token == "" {
			return nil, usageErrorf("--api-token-file %q: its first line is empty", c.APITokenFile)
		}
	}
	if (c.APIClientCert == "") != (c.APIClientKey == "") {
		return nil, usageErrorf("--api-client-cert and --api-client-key go together: give both to present a client certificate")
	}
	if c.APICACert == "" && c.APIClientCert == "" {
		return sc, nil
	}
	if u.Scheme != "https" {
		return nil, usageErrorf("--api-cacert and --api-client-cert are for an API that serves HTTPS: give --api https://...")
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.APICACert != "" {
		pem, err := os.ReadFile(c.APICACert)
		if err != nil {
			return nil, usageErrorf("--api-cacert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usageErrorf("--api-cacert %q: no PEM certificate in it", c.APICACert)
		}
		tlsCfg.RootCAs = pool
	}
	if c.APIClientCert != "" {
		cert, err := tls.LoadX509KeyPair(c.APIClientCert, c.APIClientKey)
		if err != nil {
			return nil, usageErrorf("--api-client-cert %q, --api-client-key %q: %w", c.APIClientCert, c.APIClientKey, err)
		}
		tlsCfg.Certificates = []tls.Certificate{cert}
	}
	sc.http.Transport = &http.Transport{TLSClientConfig: tlsCfg}
	return sc, nil
}

// get fetches path and returns its JSON body; an answer that is not 200 is an error with
// the API's message.
func (sc *statusClient) get(ctx context.Context, path string) (json.RawMessage, error) {
	u := sc.base.String() + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	req.Header.Set("Accept", "application/json")
	if sc.token != "" {
		req.Header.Set("Authorization", "Bearer "+sc.token)
	}
	resp, err := sc.http.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("no etcdbr API answers at %s (connection refused): is `etcdbr run` running on that machine, "+
				"with its API on that address (--listen-api; its log says \"HTTP API listening\" with the URL)? Give the "+
				"address with --api or ETCDBR_API", sc.base)
		}
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: read the answer: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		var apiErr struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &apiErr) == nil && apiErr.Error != "" {
			return nil, fmt.Errorf("GET %s: %s: %s", u, resp.Status, apiErr.Error)
		}
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	if !json.Valid(body) {
		return nil, fmt.Errorf("GET %s: the answer is not JSON: is %s an etcdbr API?", u, sc.base)
	}
	return body, nil
}

// Run prints the running etcdbr's status: the member, its health, the recovery point, the
// store, the newest backups, a restore, and the restorable window.
func (c *StatusCmd) Run(ctx context.Context, env *Env) error {
	sc, err := c.newStatusClient()
	if err != nil {
		return err
	}
	rawStatus, err := sc.get(ctx, "/v1/status")
	if err != nil {
		return err
	}
	// The listing may fail while the store is down: the status is still worth printing.
	rawBackups, backupsErr := sc.get(ctx, "/v1/backups")
	if c.JSON {
		out := map[string]any{"status": rawStatus, "backups": rawBackups}
		if backupsErr != nil {
			out["backups"] = nil
			out["backups_error"] = backupsErr.Error()
		}
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return fmt.Errorf("print the JSON: %w", err)
		}
		return nil
	}
	var st supervisor.Status
	if err := json.Unmarshal(rawStatus, &st); err != nil {
		return fmt.Errorf("GET /v1/status: decode the answer: %w", err)
	}
	var bk *apiBackups
	if backupsErr == nil {
		bk = &apiBackups{}
		if err := json.Unmarshal(rawBackups, bk); err != nil {
			return fmt.Errorf("GET /v1/backups: decode the answer: %w", err)
		}
	}
	return printStatus(env.Stdout, st, bk, backupsErr)
}

// The JSON of the API that the summary reads (docs/api.md).
type (
	apiPoint struct {
		Revision int64     `json:"revision"`
		Time     time.Time `json:"time"`
		Key      string    `json:"key"`
	}
	apiGap struct {
		From   int64  `json:"from"`
		To     int64  `json:"to"`
		After  string `json:"after"`
		Before string `json:"before"`
	}
	apiBackups struct {
		Window struct {
			Oldest    *apiPoint `json:"oldest"`
			Newest    *apiPoint `json:"newest"`
			Gaps      []apiGap  `json:"gaps"`
			Pruned    []apiGap  `json:"pruned"`
			Histories []struct {
				apiGap
				Start    int64     `json:"start"`
				Began    time.Time `json:"began"`
				Restored int64     `json:"restored_revision"`
				Trigger  string    `json:"trigger"`
			} `json:"histories"`
			Overlaps []struct {
				A    string `json:"a"`
				B    string `json:"b"`
				From int64  `json:"from"`
				To   int64  `json:"to"`
			} `json:"overlaps"`
			Damaged []struct {
				Key    string    `json:"key"`
				Found  time.Time `json:"found"`
				By     string    `json:"by"`
				Reason string    `json:"reason"`
			} `json:"damaged"`
		} `json:"window"`
	}
)

// printStatus prints the summary of st and bk (nil when the listing failed with bkErr).
func printStatus(out io.Writer, st supervisor.Status, bk *apiBackups, bkErr error) error {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	e := st.Etcd
	role := "no leader"
	switch {
	case e.IsLeader:
		role = "leader"
	case e.Leader != "":
		role = "follower of " + e.Leader
	}
	if e.Role != "" {
		role = e.Role + ", " + role
	}
	fmt.Fprintf(w, "member\t%s (ID %s, cluster %s), %s, revision %d\n", e.Name, orDash(e.MemberID), orDash(e.ClusterID), role, e.Revision)
	fmt.Fprintf(w, "state\t%s since %s (pid %d)\n", st.State, listTime(st.Since), st.PID)
	ready := len(st.Ready) > 0
	for _, c := range st.Ready {
		ready = ready && c.OK
	}
	health := "ready"
	if !ready {
		health = "NOT READY"
	}
	fmt.Fprintf(w, "health\t%s\n", health)
	for _, c := range st.Ready {
		mark := "ok  "
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "\t%s %s: %s\n", mark, c.Name, c.Message)
	}
	if len(e.Alarms) > 0 {
		fmt.Fprintf(w, "alarms\t%s\n", strings.Join(e.Alarms, ", "))
	}
	if st.Cluster != nil {
		printCluster(w, *st.Cluster)
	}
	b := st.Backups
	switch {
	case b.TakenBy != "":
		fmt.Fprintf(w, "RPO\tthe leader, %s, takes the backups: its status tells (this member does not see its uploads)\n", b.TakenBy)
	case b.UnbackedSince != nil:
		fmt.Fprintf(w, "RPO\t%s: %d revisions not in the store yet, the oldest written at %s (max %s)\n",
			seconds(b.UnbackedAgeSeconds), b.LagRevisions, listTime(*b.UnbackedSince), seconds(b.MaxBackupAgeSeconds))
	default:
		fmt.Fprintf(w, "RPO\t0s: every write is in the store (revision %d)\n", b.BackedUpRevision)
	}
	reach := "not checked yet"
	switch {
	case b.StoreReachable == nil:
	case *b.StoreReachable:
		reach = "reachable"
	default:
		reach = "UNREACHABLE: " + b.StoreError
	}
	if b.StoreCheckedAt != nil {
		reach += " (checked " + listTime(*b.StoreCheckedAt) + ")"
	}
	fmt.Fprintf(w, "store\t%s: %s\n", b.Store, reach)
	if b.ClusterMismatch != "" {
		fmt.Fprintf(w, "\t%s\n", b.ClusterMismatch)
	}
	if st.LastError != nil {
		fmt.Fprintf(w, "last error\t%s %s: %s\n", listTime(st.LastError.Time), st.LastError.Component, st.LastError.Message)
	}
	fmt.Fprintf(w, "newest full\t%s\n", objectLine(b.NewestFull))
	if b.DeltaPeriodSeconds > 0 {
		fmt.Fprintf(w, "newest delta\t%s\n", objectLine(b.NewestDelta))
	} else {
		fmt.Fprintf(w, "newest delta\tdelta snapshots are disabled\n")
	}
	if r := st.Restore; r != nil {
		what := "last restore"
		if r.Running {
			what = "RESTORING"
		}
		line := fmt.Sprintf("#%d (%s) to %s: %s, started %s", r.ID, r.Trigger, r.Target, r.Phase, listTime(r.Started))
		if r.Ended != nil {
			line += ", ended " + listTime(*r.Ended)
		}
		if r.Revision != 0 {
			line += fmt.Sprintf(", restored revision %d", r.Revision)
		}
		if r.Error != "" {
			line += ": " + r.Error
		}
		fmt.Fprintf(w, "%s\t%s\n", what, line)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("print the status: %w", err)
	}
	fmt.Fprintln(out)
	if bk == nil {
		fmt.Fprintf(out, "window: unknown: %v\n", bkErr)
		return nil
	}
	if err := printCompactWindow(out, viewOfAPIWindow(*bk)); err != nil {
		return fmt.Errorf("print the window: %w", err)
	}
	for _, o := range bk.Window.Overlaps {
		fmt.Fprintf(out, "overlap: %s and %s both hold revisions %d to %d\n", o.A, o.B, o.From, o.To)
	}
	for _, d := range bk.Window.Damaged {
		fmt.Fprintf(out, "damaged: %s failed verification in a %s at %s (%s): left out of the window\n", d.Key, d.By, listTime(d.Found), d.Reason)
	}
	return nil
}

// printCluster prints the cluster's summary and one line per member into w (the status's
// tabwriter: a label, then the text).
func printCluster(w io.Writer, c supervisor.ClusterStatus) {
	counts := fmt.Sprintf("%d voters", c.Voters)
	if c.Learners > 0 {
		counts += fmt.Sprintf(", %d learners", c.Learners)
	}
	quorum := "quorum not checked yet"
	if c.Quorum != nil {
		quorum = "quorum"
		if !*c.Quorum {
			quorum = "NO QUORUM"
		}
		if c.QuorumSince != nil {
			quorum += " since " + listTime(*c.QuorumSince)
		}
	}
	fmt.Fprintf(w, "cluster\t%d members (%s), %s, %d answering\n", c.Size, counts, quorum, c.Answering)
	if c.Quorum != nil && !*c.Quorum && c.QuorumMessage != "" {
		fmt.Fprintf(w, "\t%s\n", c.QuorumMessage)
	}
	for _, m := range c.Members {
		name := m.Name
		if name == "" {
			name = "(not started)"
		}
		if m.Self {
			name += " (this member)"
		}
		role := m.Role
		if m.IsLeader {
			role += ", leader"
		}
		health := m.Health
		if m.LagEntries != nil && *m.LagEntries > 0 {
			health += fmt.Sprintf(", lag %d entries", *m.LagEntries)
		}
		if m.LearnerSince != nil {
			health += ", a learner since " + listTime(*m.LearnerSince)
		}
		if m.Error != "" {
			health += ": " + m.Error
		}
		fmt.Fprintf(w, "\t  %s  %s  %s  %s\n", name, m.ID, role, health)
	}
}

// viewOfAPIWindow builds the compact view of the window GET /v1/backups answered.
func viewOfAPIWindow(bk apiBackups) windowView {
	w := bk.Window
	if w.Oldest == nil || w.Newest == nil {
		return windowView{empty: true}
	}
	gap := func(g apiGap) catalog.Gap {
		return catalog.Gap{From: g.From, To: g.To, After: g.After, Before: g.Before}
	}
	sw := catalog.Window{
		Oldest: catalog.Point(*w.Oldest),
		Newest: catalog.Point(*w.Newest),
	}
	for _, g := range w.Pruned {
		sw.Pruned = append(sw.Pruned, gap(g))
	}
	for _, g := range w.Gaps {
		sw.Gaps = append(sw.Gaps, gap(g))
	}
	for _, h := range w.Histories {
		sw.Boundaries = append(sw.Boundaries, catalog.Boundary{From: h.From, To: h.To, After: h.After, Before: h.Before,
			History: catalog.History{Start: h.Start, Began: h.Began, Revision: h.Restored, Trigger: h.Trigger}})
	}
	return viewOfWindow(sw)
}

// objectLine describes a backup object in one line.
func objectLine(o *supervisor.ObjectStatus) string {
	if o == nil {
		return "none"
	}
	revs := fmt.Sprintf("revision %d", o.Revision)
	if o.Kind == "delta" {
		revs = fmt.Sprintf("revisions %d-%d", o.From, o.Revision)
	}
	return fmt.Sprintf("%s, %s ago, %d bytes, %s", revs, seconds(o.AgeSeconds), o.Size, o.Key)
}

// seconds prints a number of seconds as a duration, rounded for a person.
func seconds(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
