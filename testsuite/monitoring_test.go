package testsuite

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"sigs.k8s.io/yaml"
)

// The monitoring files an operator loads: Prometheus alerting rules (with their promtool
// unit tests beside them) and a Grafana dashboard.
var (
	monitoringDir  = filepath.Join("..", "deploy", "monitoring")
	alertRulesFile = "etcdbr-alerts.yaml"
	alertTestsFile = "etcdbr-alerts-test.yaml"
	dashboardFile  = "etcdbr-dashboard.json"
)

// EnvPromtool names a promtool binary to use instead of the one scripts/promtool builds
// and caches.
const EnvPromtool = "ETCDBR_PROMTOOL"

// promtool returns the path of promtool: $ETCDBR_PROMTOOL, or the one scripts/promtool
// builds once into the user's cache (make test builds it before the tests start).
func promtool(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(EnvPromtool); p != "" {
		return p
	}
	var out bytes.Buffer
	cmd := exec.Command("go", "run", "./scripts/promtool")
	cmd.Dir = ".."
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go run ./scripts/promtool: %v", err)
	}
	p := strings.TrimSpace(out.String())
	if p == "" {
		t.Fatal("go run ./scripts/promtool printed no path")
	}
	return p
}

// runPromtool runs promtool with args in dir and returns its exit error and output.
func runPromtool(t *testing.T, bin, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// ruleFile is the part of a Prometheus rule file the tests read.
type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(monitoringDir, alertRulesFile))
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.UnmarshalStrict(data, &rf); err != nil {
		t.Fatalf("%s: %v", alertRulesFile, err)
	}
	return rf
}

// The alerts the rules must have: one per failure an operator must hear about.
var wantAlerts = []string{
	"EtcdbrNewestBackupTooOld",
	"EtcdbrDeltasLagging",
	"EtcdbrUploadsFailing",
	"EtcdbrStoreUnreachable",
	"EtcdbrRestoreFailed",
	"EtcdbrStoreClaimedByAnotherCluster",
	"EtcdbrRestoreLostRevisions",
	"EtcdbrStoreDamagedObjects",
	"EtcdbrQuorumLost",
	"EtcdbrLearnerStuck",
	"EtcdNoLeader",
}

// TestAlertRules checks the alerting rules with promtool: they load (check rules), and
// their unit tests pass (test rules: input series, the alerts expected when). Every alert
// has the runbook annotations and a unit test, and the unit tests do catch a changed
// threshold.
func TestAlertRules(t *testing.T) {
	rf := readRules(t)
	var alerts []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts = append(alerts, r.Alert)
			for _, a := range []string{"summary", "description", "runbook"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("alert %s has no %s annotation", r.Alert, a)
				}
			}
			if !strings.Contains(r.Annotations["runbook"], "etcdbr ") && !strings.Contains(r.Annotations["runbook"], "localhost:2378/v1/") {
				t.Errorf("alert %s: the runbook names no etcdbr command or API call", r.Alert)
			}
		}
	}
	for _, a := range wantAlerts {
		if !slices.Contains(alerts, a) {
			t.Errorf("%s has no alert %s", alertRulesFile, a)
		}
	}
	tests, err := os.ReadFile(filepath.Join(monitoringDir, alertTestsFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range alerts {
		if !strings.Contains(string(tests), "alertname: "+a+"\n") {
			t.Errorf("%s has no unit test in %s", a, alertTestsFile)
		}
	}

	bin := promtool(t)
	if out, err := runPromtool(t, bin, monitoringDir, "check", "rules", alertRulesFile); err != nil {
		t.Fatalf("promtool check rules %s: %v\n%s", alertRulesFile, err, out)
	}
	out, err := runPromtool(t, bin, monitoringDir, "test", "rules", alertTestsFile)
	if err != nil {
		t.Fatalf("promtool test rules %s: %v\n%s", alertTestsFile, err, out)
	}
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules %s did not report SUCCESS:\n%s", alertTestsFile, out)
	}

	// The same unit tests on a copy of the rules whose threshold moved must fail.
	rules, err := os.ReadFile(filepath.Join(monitoringDir, alertRulesFile))
	if err != nil {
		t.Fatal(err)
	}
	const threshold = "etcdbr_backup_unbacked_age_seconds > 600"
	if !bytes.Contains(rules, []byte(threshold)) {
		t.Fatalf("%s has no %q to change", alertRulesFile, threshold)
	}
	dir := t.TempDir()
	changed := bytes.Replace(rules, []byte(threshold), []byte("etcdbr_backup_unbacked_age_seconds > 1500"), 1)
	if err := os.WriteFile(filepath.Join(dir, alertRulesFile), changed, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, alertTestsFile), tests, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = runPromtool(t, bin, dir, "test", "rules", alertTestsFile)
	if err == nil || !strings.Contains(out, "EtcdbrDeltasLagging") {
		t.Fatalf("promtool test rules passed on rules with another threshold (%v):\n%s", err, out)
	}
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	Panels []struct {
		Title   string `json:"title"`
		Type    string `json:"type"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

// monitoredMetrics returns every metric name the rules and the dashboard use, each with
// where it is used.
func monitoredMetrics(t *testing.T) map[string][]string {
	t.Helper()
	used := map[string][]string{}
	add := func(where, expr string) {
		names := promqlMetricNames(expr)
		if len(names) == 0 {
			t.Errorf("%s: no metric name in %q", where, expr)
		}
		for _, n := range names {
			used[n] = append(used[n], where)
		}
	}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			add(alertRulesFile+" "+r.Alert, r.Expr)
		}
	}
	data, err := os.ReadFile(filepath.Join(monitoringDir, dashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	targets := 0
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			add(fmt.Sprintf("%s panel %q", dashboardFile, p.Title), tg.Expr)
			targets++
		}
	}
	if targets < 10 {
		t.Fatalf("%s has %d queries", dashboardFile, targets)
	}
	labelValues := regexp.MustCompile(`label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)`)
	for _, v := range d.Templating.List {
		if m := labelValues.FindStringSubmatch(v.Definition); m != nil {
			used[m[1]] = append(used[m[1]], fmt.Sprintf("%s variable %s", dashboardFile, v.Name))
		}
	}
	return used
}

// TestMonitoredMetricsServed starts a real `etcdbr run` and checks that every metric the
// alerting rules and the dashboard use is on its /metrics: a renamed or dropped metric
// would leave an alert that can never fire and an empty panel.
func TestMonitoredMetricsServed(t *testing.T) {
	used := monitoredMetrics(t)
	dir := t.TempDir()
	m := newMember(t, dir)
	store := "file://" + filepath.Join(dir, "store")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	start(t, m.runArgs(store, "--listen-api", addr))
	base := "http://" + addr
	a := newAPI(t, base)
	client(t, m.ClientURL) // etcd serves, so the API listens
	waitFor(t, "readiness", time.Minute, func() bool { return a.call(http.MethodGet, "/readyz", "", nil) == http.StatusOK })
	families := scrape(t, base)
	for name, where := range used {
		if !served(families, name) {
			t.Errorf("metric %s is not on etcdbr's /metrics; used by %s", name, strings.Join(slices.Compact(where), ", "))
		}
	}
	for _, want := range []string{"etcdbr_restore_lost_revisions", "etcdbr_store_damaged_objects", "etcd_server_has_leader", "etcd_mvcc_db_total_size_in_bytes"} {
		if _, ok := used[want]; !ok {
			t.Errorf("the rules and the dashboard do not use %s", want)
		}
	}
}

// served reports whether name is a family on /metrics, or a series of one (a histogram's
// _bucket, _sum and _count, a summary's _sum and _count).
func served(families map[string]*dto.MetricFamily, name string) bool {
	if _, ok := families[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		if f, ok := families[base]; ok {
			typ := f.GetType()
			return typ == dto.MetricType_HISTOGRAM || (typ == dto.MetricType_SUMMARY && suffix != "_bucket")
		}
	}
	return false
}

var (
	promqlStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promqlMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promqlRanges   = regexp.MustCompile(`\[[^\]]*\]`)
	promqlGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promqlIdent    = regexp.MustCompile(`(?:^|[^a-zA-Z0-9_:$.])([a-zA-Z_:][a-zA-Z0-9_:]*)`)
	promqlKeywords = []string{"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "atan2", "inf", "nan"}
)

// promqlMetricNames returns the metric names a PromQL expression selects: the
// identifiers outside strings, label matchers, ranges and grouping clauses that are
// neither keywords nor function calls. Grafana's variables ($instance, $__rate_interval)
// sit inside matchers and ranges.
func promqlMetricNames(expr string) []string {
	e := promqlStrings.ReplaceAllString(expr, `""`)
	e = promqlMatchers.ReplaceAllString(e, " ")
	e = promqlRanges.ReplaceAllString(e, " ")
	e = promqlGrouping.ReplaceAllString(e, " ")
	var names []string
	for _, m := range promqlIdent.FindAllStringSubmatchIndex(e, -1) {
		name := e[m[2]:m[3]]
		if slices.Contains(promqlKeywords, strings.ToLower(name)) {
			continue
		}
		if rest := strings.TrimLeft(e[m[3]:], " \t\n"); strings.HasPrefix(rest, "(") {
			continue // a function
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	return names
}

func TestPromqlMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`etcd_server_has_leader == 0`, []string{"etcd_server_has_leader"}},
		{`time() - etcdbr_newest_snapshot_timestamp_seconds{kind="full"} > 3 * 3600
and on (instance, job) etcdbr_state{state="serving"} == 1`, []string{"etcdbr_newest_snapshot_timestamp_seconds", "etcdbr_state"}},
		{`sum by (instance, job) (increase(etcdbr_snapshot_failures_total[15m])) > 0
unless on (instance, job) sum by (instance, job) (increase(etcdbr_snapshots_total[15m])) > 0`,
			[]string{"etcdbr_snapshot_failures_total", "etcdbr_snapshots_total"}},
		{`histogram_quantile(0.99, sum by (instance, le) (rate(etcd_disk_wal_fsync_duration_seconds_bucket{instance=~"$instance"}[$__rate_interval])))`,
			[]string{"etcd_disk_wal_fsync_duration_seconds_bucket"}},
		{`sum without (kind) (a_total offset 5m) / 1e3 + {__name__="x"} or b`, []string{"a_total", "b"}},
		{`label_replace(up, "dst", "$1", "src", "(.*)")`, []string{"up"}},
	} {
		if got := promqlMetricNames(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("promqlMetricNames(%q) = %q, want %q", tc.expr, got, tc.want)
		}
	}
}

// Every metric of etcdbr's that docs/metrics.md lists is on the dashboard or in an alerting
// rule: a metric added without a panel is a figure nobody looks at.
func TestDocumentedMetricsMonitored(t *testing.T) {
	used := monitoredMetrics(t)
	data, err := os.ReadFile(filepath.Join("..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `(etcdbr_[a-z0-9_]+)` \\|")
	rows := row.FindAllStringSubmatch(string(data), -1)
	if len(rows) < 20 {
		t.Fatalf("docs/metrics.md lists %d metrics of etcdbr's", len(rows))
	}
	for _, m := range rows {
		name := m[1]
		_, direct := used[name]
		_, histogram := used[name+"_bucket"]
		if !direct && !histogram {
			t.Errorf("%s is in docs/metrics.md but on no panel of %s and in no rule of %s", name, dashboardFile, alertRulesFile)
		}
	}
}
