package testsuite

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/etcdbr/etcdbr/internal/embeddedtest"
)

// apiCluster is the part of GET /v1/status's "cluster" the tests read.
type apiCluster struct {
	Size          int    `json:"size"`
	Voters        int    `json:"voters"`
	Learners      int    `json:"learners"`
	Quorum        *bool  `json:"quorum"`
	QuorumMessage string `json:"quorum_message"`
	Answering     int    `json:"answering"`
	Members       []struct {
		ID       string `json:"id"`
		Name     string `json:"name"`
		Role     string `json:"role"`
		IsLeader bool   `json:"is_leader"`
		Self     bool   `json:"self"`
		Health   string `json:"health"`
	} `json:"members"`
}

// apiClusterStatus is GET /v1/status as far as the cluster tests read it.
type apiClusterStatus struct {
	Etcd struct {
		Name     string `json:"name"`
		MemberID string `json:"member_id"`
		Role     string `json:"role"`
		IsLeader bool   `json:"is_leader"`
	} `json:"etcd"`
	Cluster *apiCluster `json:"cluster"`
	Backups struct {
		TakenBy      string `json:"taken_by"`
		LagRevisions int64  `json:"lag_revisions"`
	} `json:"backups"`
}

// roles is the cluster's members as "name=role/health" sorted, and the leader's name.
func (c *apiCluster) roles() (string, string) {
	var out []string
	leader := ""
	for _, m := range c.Members {
		out = append(out, m.Name+"="+m.Role+"/"+m.Health)
		if m.IsLeader {
			leader = m.Name
		}
	}
	sort.Strings(out)
	return strings.Join(out, " "), leader
}

// Three `etcdbr run` members, one of them with an API that requires client certificates:
// every member's GET /v1/status shows the same three voters, one leader and quorum; /metrics
// serves the cluster's metrics the alerts and the dashboard use, with the cluster's values;
// `etcdbr status` with a client certificate prints the members; the status page shows the
// member table. With two members killed, the survivor sees no quorum: its status, /readyz
// (failing, saying why), etcdbr_cluster_quorum, its log and its page say so.
func TestClusterStatusQuorumAndPage(t *testing.T) {
	t.Parallel()
	pki := embeddedtest.NewPKI(t)
	c := newCluster(t, 3, "file://"+t.TempDir()+"/store", "--delta-snapshot-period", "1s")
	tlsAPI := []string{"--api-cert", pki.ServerCert, "--api-key", pki.ServerKey, "--api-client-ca", pki.CA}
	for i := range c.members {
		var extra []string
		if i == 2 {
			extra = tlsAPI
		}
		c.start(i, c.args(i, "new", extra...))
	}
	caPEM, err := os.ReadFile(pki.CA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	clientCert, err := tls.LoadX509KeyPair(pki.ClientCert, pki.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	apis := []*api{newAPI(t, "http://"+c.apis[0]), newAPI(t, "http://"+c.apis[1]), {t: t, base: "https://" + c.apis[2],
		client: &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots,
			Certificates: []tls.Certificate{clientCert}, MinVersion: tls.VersionTLS12}}}}}
	for i := range c.members {
		c.client(i)
	}

	// Every member sees the same three voters, the same leader, and quorum.
	const voters = "m0=voter/healthy m1=voter/healthy m2=voter/healthy"
	var ids []string
	waitFor(t, "every member's status to show three healthy voters, one leader and quorum", time.Minute, func() bool {
		leaders := map[string]bool{}
		ids = nil
		for i, a := range apis {
			var st apiClusterStatus
			if a.call(http.MethodGet, "/v1/status", "", &st) != http.StatusOK || st.Cluster == nil {
				return false
			}
			cl := st.Cluster
			roles, leader := cl.roles()
			if roles != voters || leader == "" || cl.Size != 3 || cl.Voters != 3 || cl.Learners != 0 || cl.Quorum == nil ||
				!*cl.Quorum || cl.Answering != 3 || st.Etcd.Role != "voter" {
				return false
			}
			leaders[leader] = true
			for _, m := range cl.Members {
				if m.Self != (m.Name == c.members[i].Name) || (m.Self && m.ID != st.Etcd.MemberID) {
					t.Fatalf("member %s: its own entry is wrong: %+v", c.members[i].Name, cl.Members)
				}
				if i == 0 {
					ids = append(ids, m.ID)
				} else if !strings.Contains(strings.Join(ids, " "), m.ID) {
					return false
				}
			}
		}
		return len(leaders) == 1
	})
	for i, a := range apis {
		waitFor(t, c.members[i].Name+" to be ready", time.Minute, func() bool { return a.call(http.MethodGet, "/readyz", "", nil) == http.StatusOK })
	}

	// A member that does not lead names the leader, which takes the backups, and claims no
	// RPO or lag of its own; the leader names no one.
	var leader string
	waitFor(t, "every member's status to name the leader as the one that takes the backups", time.Minute, func() bool {
		leader = ""
		var takenBy []string
		for i, a := range apis {
			var st apiClusterStatus
			if a.call(http.MethodGet, "/v1/status", "", &st) != http.StatusOK || st.Cluster == nil {
				return false
			}
			if st.Etcd.IsLeader {
				if st.Backups.TakenBy != "" {
					t.Fatalf("the leader %s says %q takes the backups", c.members[i].Name, st.Backups.TakenBy)
				}
				leader = c.members[i].Name
				continue
			}
			if st.Backups.LagRevisions != 0 {
				t.Fatalf("%s, not the leader, claims a lag of %d revisions", c.members[i].Name, st.Backups.LagRevisions)
			}
			takenBy = append(takenBy, st.Backups.TakenBy)
		}
		if leader == "" || len(takenBy) != 2 {
			return false // a new leader is being elected
		}
		for _, by := range takenBy {
			if !strings.HasPrefix(by, leader+" (ID ") {
				return false
			}
		}
		return true
	})

	// The cluster's metrics that the alerts and the dashboard use are served, with the
	// cluster's values.
	families := scrape(t, "http://"+c.apis[0])
	for name, where := range monitoredMetrics(t) {
		if (strings.HasPrefix(name, "etcdbr_cluster_") || strings.HasPrefix(name, "etcdbr_etcd_")) && !served(families, name) {
			t.Errorf("metric %s is not on a cluster member's /metrics; used by %s", name, strings.Join(where, ", "))
		}
	}
	for _, want := range []struct {
		name   string
		labels []string
		value  float64
	}{
		{"etcdbr_cluster_members", []string{"role", "voter"}, 3},
		{"etcdbr_cluster_members", []string{"role", "learner"}, 0},
		{"etcdbr_cluster_members_answering", nil, 3},
		{"etcdbr_cluster_quorum", nil, 1},
		{"etcdbr_cluster_learner_age_seconds", nil, 0},
		{"etcdbr_etcd_learner", nil, 0},
		{"etcdbr_ready", []string{"check", "voter"}, 1},
	} {
		if got := value(t, families, want.name, want.labels...); got != want.value {
			t.Errorf("%s%v = %v, want %v", want.name, want.labels, got, want.value)
		}
	}

	// etcdbr status reaches the API that requires a client certificate with one.
	tlsArgs := []string{"status", "--api", "https://" + c.apis[2], "--api-cacert", pki.CA}
	code, out := runToExit(t, tlsArgs)
	if code != 1 || !strings.Contains(out, "401 Unauthorized") {
		t.Fatalf("etcdbr status without a client certificate: exit %d, want 1 and 401:\n%s", code, out)
	}
	code, out = runToExit(t, append(tlsArgs, "--api-client-cert", pki.ClientCert, "--api-client-key", pki.ClientKey))
	if code != 0 {
		t.Fatalf("etcdbr status with a client certificate: exit %d\n%s", code, out)
	}
	t.Log(out)
	rpo := "RPO           0s: every write is in the store"
	if leader != "m2" {
		rpo = "RPO           the leader, " + leader + " (ID "
	}
	for _, want := range []string{rpo, "member        m2 (ID ", "voter, ", "cluster       3 members (3 voters), quorum since ",
		", 3 answering", "m0  ", "m1  ", "m2 (this member)  ", "  voter, leader  healthy"} {
		if !strings.Contains(out, want) {
			t.Errorf("etcdbr status does not say %q", want)
		}
	}

	var page *pageView
	if haveChromium(t) {
		page = openPage(t, "http://"+c.apis[0])
		waitText(t, page.ctx, "cluster-summary", "3 members (3 voters) · quorum since", time.Minute)
		if leader != "m0" {
			waitText(t, page.ctx, "rpo-detail", "the leader, "+leader+" (ID ", time.Minute)
		}
		rows := waitText(t, page.ctx, "members-body", "m2", time.Minute)
		for _, m := range c.members {
			if !strings.Contains(rows, m.Name) {
				t.Errorf("the member table does not show %s: %q", m.Name, rows)
			}
		}
		cells, err := chromedp.Run(page.ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#members-body tr"))
			.map((tr) => tr.dataset.member + ":" + tr.className + ":" + Array.from(tr.cells).slice(2, 4).map((td) => td.textContent).join("/"))`))
		if err != nil {
			t.Fatal(err)
		}
		leaders := 0
		for _, row := range cells {
			leaders += strings.Count(row, "leader")
			if !strings.Contains(row, "voter") || !strings.HasSuffix(row, "/healthy") {
				t.Errorf("member row %q: want a healthy voter", row)
			}
		}
		if len(cells) != 3 || leaders != 1 || !strings.HasPrefix(cells[0], "m0:self:") {
			t.Errorf("member rows %q: want m0 (this member), m1, m2 and one leader", cells)
		}
		page.screenshots(t, "cluster")
	}

	// Two of three killed: the survivor sees no quorum.
	c.kill(1)
	c.kill(2)
	a := apis[0]
	var st apiClusterStatus
	waitFor(t, "the survivor's status to show no quorum", time.Minute, func() bool {
		return a.call(http.MethodGet, "/v1/status", "", &st) == http.StatusOK && st.Cluster != nil && st.Cluster.Quorum != nil && !*st.Cluster.Quorum
	})
	t.Logf("quorum: %s", st.Cluster.QuorumMessage)
	if !strings.Contains(st.Cluster.QuorumMessage, "members answering: m0") {
		t.Errorf("the quorum message does not say who answers: %q", st.Cluster.QuorumMessage)
	}
	var ready apiReady
	if code := a.call(http.MethodGet, "/readyz", "", &ready); code != http.StatusServiceUnavailable || ready.Ready ||
		!strings.Contains(ready.Failed, "etcd: ") || !strings.Contains(ready.Failed, "quorum") {
		t.Errorf("/readyz of the survivor: %d %+v, want 503 saying that the cluster has no quorum", code, ready)
	}
	waitFor(t, "etcdbr_cluster_quorum 0 on the survivor", time.Minute, func() bool {
		return value(t, scrape(t, "http://"+c.apis[0]), "etcdbr_cluster_quorum") == 0
	})
	c.procs[0].waitLine("the cluster lost its quorum", time.Minute)
	if page != nil {
		waitText(t, page.ctx, "cluster-summary", "NO QUORUM", time.Minute)
		rows := textOf(t, page.ctx, "members-body")
		if strings.Count(rows, "unreachable") != 2 {
			t.Errorf("the member table after two were killed: %q, want two unreachable", rows)
		}
		page.screenshots(t, "cluster-no-quorum")
	}
}

// pageView is the status page open in headless Chromium.
type pageView struct {
	ctx context.Context
	dir string // where screenshots go
}

// haveChromium reports whether Chromium is there to open the status page with; it fails the
// test in CI without it (needChromium).
func haveChromium(t *testing.T) bool {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil && os.Getenv("CI") == "" {
		t.Logf("%s is missing (%v): the status page is not checked (apt-get install -y chromium)", chromiumPath, err)
		return false
	}
	needChromium(t)
	return true
}

// openPage opens the status page at base in a browser of its own.
func openPage(t *testing.T, base string) *pageView {
	t.Helper()
	p := &pageView{ctx: browser(t, chromiumPath), dir: artifactsDir(t)}
	if err := chromedp.Do(p.ctx, chromedp.EmulateViewport(1280, 800), chromedp.Navigate(base+"/")); err != nil {
		t.Fatal(err)
	}
	return p
}

// screenshots saves the page at 1280x800 and at a phone's size as <name>-<size>.png, and
// checks that it does not scroll sideways on the phone.
func (p *pageView) screenshots(t *testing.T, name string) {
	t.Helper()
	screenshot(t, p.ctx, p.dir, name+"-1280x800.png", 1280, 800, false)
	screenshot(t, p.ctx, p.dir, name+"-390x844.png", 390, 844, true)
	overflow, err := chromedp.Run(p.ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth`))
	if err != nil {
		t.Fatal(err)
	}
	if overflow {
		t.Errorf("%s at 390x844: the page is wider than the screen (it scrolls sideways)", name)
	}
	if err := chromedp.Do(p.ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatal(err)
	}
}
