package testsuite

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/etcdbr/etcdbr/internal/etcdtest"
)

// chromiumPath is Debian's Chromium, which the status page test drives.
const chromiumPath = "/usr/bin/chromium"

// artifactsDir is where a test saves what a person would look at (screenshots):
// $ETCDBR_TEST_ARTIFACTS/<test> when set, else a temporary dir of the test.
func artifactsDir(t *testing.T) string {
	t.Helper()
	root := os.Getenv("ETCDBR_TEST_ARTIFACTS")
	if root == "" {
		return t.TempDir()
	}
	dir := filepath.Join(root, strings.ReplaceAll(t.Name(), "/", "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// needChromium returns Chromium's path; it skips the test when Chromium is missing outside
// CI, and fails it in CI (CI set), where .ci/run installs it.
func needChromium(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		msg := fmt.Sprintf("%s is missing (%v): install it (apt-get install -y chromium) to run the status page test", chromiumPath, err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return chromiumPath
}

// gatedS3 is an in-process S3 server whose GETs of full snapshots wait while its gate is
// closed: a restore then stays in its "restoring" phase until the test opens the gate.
type gatedS3 struct {
	url  string   // the store URL
	env  []string // the credentials etcdbr needs
	mu   sync.Mutex
	gate chan struct{} // nil: open
}

func startGatedS3(t *testing.T) *gatedS3 {
	t.Helper()
	backend := s3mem.New()
	if err := backend.CreateBucket("backups"); err != nil {
		t.Fatal(err)
	}
	g := &gatedS3{env: []string{"AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test", "AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true"}}
	s3 := gofakes3.New(backend).Server()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/full/") {
			g.mu.Lock()
			gate := g.gate
			g.mu.Unlock()
			if gate != nil {
				select {
				case <-gate:
				case <-r.Context().Done():
					return
				}
			}
		}
		s3.ServeHTTP(w, r)
	})}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
	g.url = "s3://backups/page?region=us-east-1&use_path_style=true&response_checksum_validation=when_required&endpoint=" +
		url.QueryEscape("http://"+ln.Addr().String())
	return g
}

// hold closes the gate; the function it returns opens it again.
func (g *gatedS3) hold() (release func()) {
	gate := make(chan struct{})
	g.mu.Lock()
	g.gate = gate
	g.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			g.gate = nil
			g.mu.Unlock()
			close(gate)
		})
	}
}

// browser starts a headless Chromium of its own (fresh profile) and returns a tab's
// context. Exceptions and console errors of the page fail the test.
func browser(t *testing.T, chromium string) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.WindowSize(1280, 800),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start %s: %v", chromium, err)
	}
	err := chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			t.Errorf("the page threw: %+v", ev.ExceptionDetails)
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				var args []string
				for _, a := range ev.Args {
					args = append(args, fmt.Sprintf("%s%s", a.Value, a.Description))
				}
				t.Errorf("the page logged an error: %s", strings.Join(args, " "))
			}
		case *cdplog.EventEntryAdded:
			// The browser's own errors: a script or style the Content-Security-Policy
			// blocked, a request that failed.
			if ev.Entry.Level == cdplog.EntryLevelError {
				t.Errorf("the browser reports for the page: %s: %s (%s)", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL)
			}
		}
	})
	if err != nil {
		t.Fatalf("listen to the page's events: %v", err)
	}
	return ctx
}

// textOf returns the text of the element with the given id ("" when it has none).
func textOf(t *testing.T, ctx context.Context, id string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(document.getElementById(%q) || {}).textContent || ""`, id)))
	if err != nil {
		t.Fatalf("read #%s: %v", id, err)
	}
	return s
}

// waitText waits until the element with the given id shows a text that contains want.
func waitText(t *testing.T, ctx context.Context, id, want string, timeout time.Duration) string {
	t.Helper()
	var got string
	deadline := time.Now().Add(timeout)
	for {
		if got = textOf(t, ctx, id); strings.Contains(got, want) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v the page's #%s shows %q, not %q", timeout, id, got, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// screenshot saves the viewport at width x height (mobile: a phone's) as name in dir.
func screenshot(t *testing.T, ctx context.Context, dir, name string, width, height int64, mobile bool) {
	t.Helper()
	emulate := []chromedp.EmulateViewportOption{}
	if mobile {
		emulate = append(emulate, chromedp.EmulateScale(2), chromedp.EmulateMobile, chromedp.EmulateTouch)
	}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(width, height, emulate...)); err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot at %dx%d: %s", width, height, path)
}

// TestStatusPage opens the status page of a running `etcdbr run` in headless Chromium and
// checks what a person sees there: the member, the newest backups, the ends of the
// restorable window as GET /v1/backups reports them, and a restore's phase while it runs;
// it saves screenshots at 1280x800 and at a phone's size.
func TestStatusPage(t *testing.T) {
	chromium := needChromium(t)
	dir := t.TempDir()
	out := artifactsDir(t)
	s3 := startGatedS3(t)
	m := newMember(t, dir)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := start(t, m.runArgs(s3.url, "--full-snapshot-schedule", "@daily", "--delta-snapshot-period", "1s", "--listen-api", addr), s3.env...)
	a := newAPI(t, "http://"+addr)
	cli := client(t, m.ClientURL)
	ctx := context.Background()
	waitFor(t, "readiness", time.Minute, func() bool { return a.call(http.MethodGet, "/readyz", "", nil) == http.StatusOK })

	revA, err := etcdtest.Workload{Seed: 31, Keys: 300, Overwrites: 80, Deletes: 20}.Run(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	if code := a.call(http.MethodPost, "/v1/snapshots/delta", "", nil); code != http.StatusOK {
		t.Fatalf("POST /v1/snapshots/delta: %d", code)
	}
	var full struct {
		Snapshot apiObject `json:"snapshot"`
	}
	if code := a.call(http.MethodPost, "/v1/snapshots/full", "", &full); code != http.StatusOK {
		t.Fatalf("POST /v1/snapshots/full: %d", code)
	}
	revB, err := etcdtest.Workload{Seed: 32, Keys: 50, Overwrites: 20}.Run(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	var delta struct {
		Deltas []apiObject `json:"deltas"`
	}
	if code := a.call(http.MethodPost, "/v1/snapshots/delta", "", &delta); code != http.StatusOK || len(delta.Deltas) == 0 {
		t.Fatalf("POST /v1/snapshots/delta: %d %+v", code, delta)
	}
	newestDelta := delta.Deltas[len(delta.Deltas)-1]
	var win struct {
		Window struct {
			Oldest, Newest *struct {
				Revision int64 `json:"revision"`
			}
			Histories []struct {
				Start int64 `json:"start"`
			} `json:"histories"`
		} `json:"window"`
	}
	if code := a.call(http.MethodGet, "/v1/backups", "", &win); code != http.StatusOK || win.Window.Newest == nil || win.Window.Newest.Revision != revB {
		t.Fatalf("GET /v1/backups: %d %+v, want the window up to revision %d", code, win, revB)
	}
	var st struct {
		Etcd struct {
			MemberID  string `json:"member_id"`
			ClusterID string `json:"cluster_id"`
		} `json:"etcd"`
	}
	if code := a.call(http.MethodGet, "/v1/status", "", &st); code != http.StatusOK || st.Etcd.MemberID == "" {
		t.Fatalf("GET /v1/status: %d %+v", code, st)
	}

	page := browser(t, chromium)
	if err := chromedp.Do(page, chromedp.EmulateViewport(1280, 800), chromedp.Navigate("http://"+addr+"/")); err != nil {
		t.Fatal(err)
	}
	waitText(t, page, "window-newest", fmt.Sprintf("revision %d", revB), time.Minute)
	waitText(t, page, "newest-delta", newestDelta.Key, time.Minute)
	for id, want := range map[string]string{
		"member-name":   m.Name,
		"member-id":     st.Etcd.MemberID,
		"cluster-id":    st.Etcd.ClusterID,
		"window-oldest": fmt.Sprintf("revision %d", win.Window.Oldest.Revision),
		"newest-full":   fmt.Sprintf("revision %d ·", full.Snapshot.Revision),
		"health":        "ready",
		"role":          "leader",
		"restore":       "no restore since etcdbr started",
	} {
		if got := textOf(t, page, id); !strings.Contains(got, want) {
			t.Errorf("the page's #%s shows %q, want %q", id, got, want)
		}
	}
	// The supervisor samples etcd's revision a little after the writes: the recovery point
	// shows the last write waiting until then.
	waitText(t, page, "rpo", "0 s", time.Minute)
	if got := textOf(t, page, "newest-full"); !strings.Contains(got, full.Snapshot.Key) {
		t.Errorf("the page's newest full snapshot is %q, want %s", got, full.Snapshot.Key)
	}
	screenshot(t, page, out, "status-1280x800.png", 1280, 800, false)
	screenshot(t, page, out, "status-390x844.png", 390, 844, true)
	overflow, err := chromedp.Run(page, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth`))
	if err != nil {
		t.Fatal(err)
	}
	if overflow {
		t.Error("at 390x844 the page is wider than the screen (it scrolls sideways)")
	}
	if err := chromedp.Do(page, chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatal(err)
	}

	// A restore to revision A, held in its "restoring" phase while the store does not
	// answer for full snapshots: the page shows the phase.
	release := s3.hold()
	t.Cleanup(release)
	var accepted struct {
		Restore apiRestore `json:"restore"`
	}
	if code := a.call(http.MethodPost, "/v1/restore", fmt.Sprintf(`{"revision": %d}`, revA), &accepted); code != http.StatusAccepted {
		t.Fatalf("POST /v1/restore: %d %+v", code, accepted)
	}
	waitText(t, page, "restore", "in progress: restoring", time.Minute)
	var during apiStatus
	if code := a.call(http.MethodGet, "/v1/status", "", &during); code != http.StatusOK || during.Restore == nil ||
		during.Restore.Phase != "restoring" || !during.Restore.Running {
		t.Fatalf("GET /v1/status while the page shows the restore running: %d %+v", code, during.Restore)
	}
	if got := textOf(t, page, "phases"); !strings.Contains(got, "restoring") {
		t.Errorf("the page's restore phases are %q", got)
	}
	screenshot(t, page, out, "status-restoring-1280x800.png", 1280, 800, false)
	release()
	waitText(t, page, "restore", "last: succeeded", 2*time.Minute)

	// The restore went back in time: a new history, which the window shows.
	waitFor(t, "the store's listing to show the new history", time.Minute, func() bool {
		return a.call(http.MethodGet, "/v1/backups", "", &win) == http.StatusOK && len(win.Window.Histories) == 1
	})
	waitText(t, page, "ranges", fmt.Sprintf("started a new history at %d", win.Window.Histories[0].Start), time.Minute)
	waitText(t, page, "window-newest", fmt.Sprintf("revision %d", win.Window.Newest.Revision), time.Minute)
	// The jump between the histories is drawn as a break of fixed width (1000 revisions
	// that never existed here; a billion after a restore at start), not in proportion.
	widths, err := chromedp.Run(page, chromedp.Evaluate[[]float64](`Array.from(document.querySelectorAll("#timeline rect"))
		.filter((r) => r.querySelector("title").textContent.startsWith("between histories"))
		.map((r) => parseFloat(r.getAttribute("width")))`))
	if err != nil || len(widths) != 1 || widths[0] != 40 {
		t.Fatalf("the break between the histories on the timeline: widths %v (%v), want one of 40 of 1000 units", widths, err)
	}
	screenshot(t, page, out, "status-after-restore-1280x800.png", 1280, 800, false)
	p.stop()
}
