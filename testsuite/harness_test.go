package testsuite

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdbr/etcdbr/internal/embeddedtest"
)

// binary is the etcdbr binary built once for the whole suite; etcdutl is etcd's own offline
// tool, built from the version in go.mod, for checks that plain etcd tooling agrees.
var binary, etcdutl string

func TestMain(m *testing.M) {
	// Every `etcdbr run` of this suite gets an API on a port of its own (many run at once):
	// the default 127.0.0.1:2378 would be taken by the first. API tests give --listen-api.
	os.Setenv("ETCDBR_LISTEN_API", "127.0.0.1:0")
	dir, err := os.MkdirTemp("", "etcdbr-testsuite-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "etcdbr")
	etcdutl = filepath.Join(dir, "etcdutl")
	for out, pkg := range map[string]string{binary: "../cmd/etcdbr", etcdutl: "go.etcd.io/etcd/etcdutl/v3"} {
		build := exec.Command("go", "build", "-o", out, pkg)
		build.Stdout, build.Stderr = os.Stdout, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n", pkg, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a loopback TCP port that was free a moment ago (embeddedtest.FreePort).
func freePort(t testing.TB) int {
	t.Helper()
	return embeddedtest.FreePort(t)
}

// member is the etcd side of one etcdbr invocation: where its data lives and how to reach it.
type member struct {
	Name      string
	DataDir   string
	ClientURL string
	PeerURL   string
}

func newMember(t testing.TB, dir string) member {
	return member{
		Name:      "m1",
		DataDir:   filepath.Join(dir, "data"),
		ClientURL: fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
		PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
	}
}

// etcdFlags are the etcd flags that place the member on its ports.
func (m member) etcdFlags() []string {
	return []string{
		"--name=" + m.Name,
		"--listen-client-urls=" + m.ClientURL,
		"--advertise-client-urls=" + m.ClientURL,
		"--listen-peer-urls=" + m.PeerURL,
		"--initial-advertise-peer-urls=" + m.PeerURL,
		"--initial-cluster=" + m.Name + "=" + m.PeerURL,
		"--log-level=error",
	}
}

// runArgs is `etcdbr run` for the member with the given store and extra etcdbr flags.
func (m member) runArgs(store string, extra ...string) []string {
	args := append([]string{"run", "--data-dir", m.DataDir, "--store", store}, extra...)
	return append(append(args, "--"), m.etcdFlags()...)
}

// proc is a running etcdbr process.
type proc struct {
	t    testing.TB
	cmd  *exec.Cmd
	done chan struct{}
	err  error

	mu     sync.Mutex
	output bytes.Buffer
	lines  []string
	notify chan struct{}
}

// start runs the binary (argv0 names it, for the `etcd` drop-in) with args and extra
// environment variables.
func start(t testing.TB, args []string, env ...string) *proc {
	t.Helper()
	return startAs(t, binary, args, env...)
}

func startAs(t testing.TB, path string, args []string, env ...string) *proc {
	t.Helper()
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	p := &proc{t: t, cmd: cmd, done: make(chan struct{}), notify: make(chan struct{}, 1)}
	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.output.WriteString(sc.Text() + "\n")
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
			select {
			case p.notify <- struct{}{}:
			default:
			}
		}
	}()
	go func() {
		readers.Wait()
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("output of %s:\n%s", strings.Join(args, " "), p.Output())
		}
	})
	return p
}

// Output is everything the process printed so far.
func (p *proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.output.String()
}

// waitLine waits until a printed line contains substr.
func (p *proc) waitLine(substr string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.After(timeout)
	seen := 0
	for {
		p.mu.Lock()
		for ; seen < len(p.lines); seen++ {
			if strings.Contains(p.lines[seen], substr) {
				p.mu.Unlock()
				return
			}
		}
		p.mu.Unlock()
		select {
		case <-p.notify:
		case <-p.done:
			p.t.Fatalf("process exited (%v) before printing %q", p.err, substr)
		case <-deadline:
			p.t.Fatalf("no line with %q after %v", substr, timeout)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// count returns how many printed lines contain every one of substrs.
func (p *proc) count(substrs ...string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, line := range p.lines {
		all := true
		for _, s := range substrs {
			all = all && strings.Contains(line, s)
		}
		if all {
			n++
		}
	}
	return n
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("process still running after %v", timeout)
	}
	return p.cmd.ProcessState.ExitCode()
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatal(err)
	}
	if code := p.wait(60 * time.Second); code != 0 {
		p.t.Fatalf("exit code %d after SIGTERM", code)
	}
}

// runToExit runs the binary to completion and returns its exit code and output.
func runToExit(t testing.TB, args []string, env ...string) (int, string) {
	t.Helper()
	p := start(t, args, env...)
	code := p.wait(2 * time.Minute)
	return code, p.Output()
}

// client connects to endpoint and waits until it answers.
func client(t testing.TB, endpoint string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	waitServing(t, cli, endpoint)
	return cli
}

func waitServing(t testing.TB, cli *clientv3.Client, endpoint string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := cli.Get(ctx, "health-probe")
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd at %s does not serve: %v", endpoint, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
