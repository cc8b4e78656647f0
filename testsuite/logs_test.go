package testsuite

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/etcdbr/etcdbr/internal/embeddedtest"
)

// logRun is one `etcdbr run` of a fresh member whose whole output (stdout and stderr) a test
// reads.
type logRun struct {
	etcdLevel  string         // etcd's --log-level (the suite's usual flags keep etcd at error)
	etcdbr     []string       // etcdbr's flags
	env        []string       // extra environment variables
	sig        syscall.Signal // the stop (SIGTERM when 0)
	configFile bool           // etcd's flags in a config file (--config-file) instead of after --
}

// run starts the member, waits until it serves and has taken its first full snapshot, stops
// it with the signal (exit 0 required) and returns the lines it printed.
func (r logRun) run(t *testing.T) []string {
	t.Helper()
	dir := t.TempDir()
	m := newMember(t, dir)
	etcdFlags := slices.DeleteFunc(m.etcdFlags(), func(a string) bool { return strings.HasPrefix(a, "--log-level=") })
	etcdFlags = append(etcdFlags, "--log-level="+r.etcdLevel)
	if r.configFile {
		file := filepath.Join(dir, "etcd.yaml")
		var yaml strings.Builder
		for _, f := range etcdFlags {
			key, value, _ := strings.Cut(strings.TrimPrefix(f, "--"), "=")
			fmt.Fprintf(&yaml, "%s: %s\n", key, value)
		}
		if err := os.WriteFile(file, []byte(yaml.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		etcdFlags = []string{"--config-file=" + file}
	}
	args := append([]string{"run", "--data-dir", m.DataDir, "--store", "file://" + filepath.Join(dir, "store")}, r.etcdbr...)
	p := start(t, append(append(args, "--"), etcdFlags...), r.env...)
	cli := client(t, m.ClientURL)
	// A watch open while etcd stops: the stop ends it rather than waits for it.
	watch := cli.Watch(t.Context(), "k")
	if _, err := cli.Put(t.Context(), "k", "v"); err != nil {
		t.Fatal(err)
	}
	<-watch
	p.waitLine("full snapshot taken", time.Minute)
	sig := r.sig
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(60 * time.Second); code != 0 {
		t.Fatalf("exit code %d after %v", code, sig)
	}
	return strings.Split(strings.TrimSuffix(p.Output(), "\n"), "\n")
}

// errorLevels are the levels of a line that reports a failure (DPANIC, PANIC and FATAL are
// etcd's zap levels above error).
var errorLevels = []string{"ERROR", "DPANIC", "PANIC", "FATAL"}

// logLine is one parsed line: its attributes as strings (a JSON value that is not a string
// in its JSON form).
type logLine map[string]string

// parseJSONLine parses a line of --log-format json.
func parseJSONLine(line string) (logLine, error) {
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		return nil, err
	}
	out := logLine{}
	for k, v := range m {
		if s, ok := v.(string); ok {
			out[k] = s
			continue
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		out[k] = string(b)
	}
	return out, nil
}

// parseTextLine parses a line of --log-format text (log/slog's: key=value pairs separated by
// one space, a value quoted when it needs to be).
func parseTextLine(line string) (logLine, error) {
	out := logLine{}
	for s := line; s != ""; {
		key, rest, ok := strings.Cut(s, "=")
		if !ok || key == "" || strings.ContainsAny(key, " \"") {
			return nil, fmt.Errorf("no key=value at %q", s)
		}
		var value string
		if strings.HasPrefix(rest, `"`) {
			quoted, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return nil, fmt.Errorf("value of %s: %w", key, err)
			}
			value, _ = strconv.Unquote(quoted)
			rest = rest[len(quoted):]
		} else {
			end := strings.IndexByte(rest, ' ')
			if end < 0 {
				end = len(rest)
			}
			value, rest = rest[:end], rest[end:]
		}
		if _, dup := out[key]; dup {
			return nil, fmt.Errorf("%s twice", key)
		}
		out[key] = value
		if rest != "" && !strings.HasPrefix(rest, " ") {
			return nil, fmt.Errorf("no space after %s=%s", key, value)
		}
		s = strings.TrimPrefix(rest, " ")
	}
	return out, nil
}

// checkLines parses every line in format (json or text), fails the test on a line that is
// not one, on a line at error level or above, on a stack trace and on etcd's warning that its
// data dir was empty (etcdbr's --data-dir is given), and returns the parsed lines.
func checkLines(t *testing.T, lines []string, format string) []logLine {
	t.Helper()
	parse := parseTextLine
	if format == "json" {
		parse = parseJSONLine
	}
	var out []logLine
	for _, l := range lines {
		m, err := parse(l)
		if err != nil {
			t.Errorf("not a %s line (%v): %s", format, err, l)
			continue
		}
		if format == "text" && !strings.HasPrefix(l, "time=") {
			t.Errorf("a text line that does not start with time=: %s", l)
		}
		for _, key := range []string{"time", "level", "msg"} {
			if _, ok := m[key]; !ok {
				t.Errorf("no %q in %s", key, l)
			}
		}
		if slices.Contains(errorLevels, m["level"]) {
			t.Errorf("an error-level line on a clean run: %s", l)
		}
		if _, ok := m["stacktrace"]; ok || strings.Contains(l, "goroutine ") {
			t.Errorf("a stack trace on a clean run: %s", l)
		}
		if strings.Contains(m["msg"], "'data-dir' was empty") {
			t.Errorf("etcd warns about an empty data dir although --data-dir was given: %s", l)
		}
		out = append(out, m)
	}
	return out
}

// countEtcd returns how many lines carry component=etcd.
func countEtcd(lines []logLine) int {
	n := 0
	for _, l := range lines {
		if l["component"] == "etcd" {
			n++
		}
	}
	return n
}

// TestLogFormatJSON: with --log-format json every line is a JSON object, etcd's as well as
// etcdbr's, and etcd's carry component=etcd; a stop by SIGTERM logs no error.
func TestLogFormatJSON(t *testing.T) {
	t.Parallel()
	lines := checkLines(t, logRun{etcdLevel: "info", etcdbr: []string{"--log-format", "json"}}.run(t), "json")
	if countEtcd(lines) == 0 {
		t.Errorf("no line with component=etcd among %d", len(lines))
	}
	if !slices.ContainsFunc(lines, func(l logLine) bool { return l["msg"] == "etcd is ready" && l["component"] == "" }) {
		t.Error("etcdbr's own lines are missing")
	}
}

// TestLogFormatText: with the default --log-format text every line is a slog text line,
// etcd's with component=etcd; a stop by SIGINT (Ctrl-C) is as clean as by SIGTERM: exit 0,
// no error.
func TestLogFormatText(t *testing.T) {
	t.Parallel()
	lines := checkLines(t, logRun{etcdLevel: "info", sig: syscall.SIGINT}.run(t), "text")
	if countEtcd(lines) == 0 {
		t.Errorf("no line with component=etcd among %d", len(lines))
	}
	if !slices.ContainsFunc(lines, func(l logLine) bool {
		return l["msg"] == "signal received: stopping cleanly (send it again to exit at once)" && l["signal"] == "interrupt"
	}) {
		t.Error("the stop was not by SIGINT")
	}
}

// TestCleanStopLogsNoError: a run that starts, serves, backs up and stops on SIGTERM logs no
// line at error level or above, with everything at debug level (the lines about the
// listeners that the stop closes are there, at debug). gRPC's lines come through etcd's
// logger (logger=grpc), whatever gRPC's own variables ask for.
func TestCleanStopLogsNoError(t *testing.T) {
	t.Parallel()
	lines := checkLines(t, logRun{
		etcdLevel: "debug",
		etcdbr:    []string{"--log-format", "json", "--log-level", "debug"},
		env:       []string{"GRPC_GO_LOG_SEVERITY_LEVEL=info", "GRPC_GO_LOG_VERBOSITY_LEVEL=99"},
	}.run(t), "json")
	listenersClosed, grpc := 0, 0
	for _, m := range lines {
		if m["component"] == "etcd" && m["msg"] == "setting up serving from embedded etcd failed." {
			listenersClosed++
			if m["level"] != "DEBUG" {
				t.Errorf("a listener closed by the stop logged at %s: %v", m["level"], m)
			}
		}
		if m["logger"] == "grpc" {
			grpc++
			if m["component"] != "etcd" {
				t.Errorf("a gRPC line without component=etcd: %v", m)
			}
		}
	}
	if listenersClosed == 0 {
		t.Error("etcd's debug lines about the closed listeners are missing: are etcd's debug lines routed?")
	}
	if grpc == 0 {
		t.Error("no gRPC line (logger=grpc) at etcd's debug level")
	}
}

// TestEtcdLogLevel: etcd's --log-level filters etcd's lines: at warn none of etcd's info
// lines, while etcdbr's own info lines stay (etcdbr's --log-level is info).
func TestEtcdLogLevel(t *testing.T) {
	t.Parallel()
	lines := checkLines(t, logRun{etcdLevel: "warn", etcdbr: []string{"--log-format", "json"}}.run(t), "json")
	warnings := 0
	for _, m := range lines {
		if m["component"] != "etcd" {
			continue
		}
		if m["level"] != "WARN" {
			t.Errorf("an etcd line at %s with etcd's --log-level=warn: %v", m["level"], m)
			continue
		}
		warnings++
	}
	if warnings == 0 {
		t.Error("none of etcd's warnings (it warns about the client port that also serves HTTP)")
	}
	if !slices.ContainsFunc(lines, func(l logLine) bool { return l["msg"] == "etcd is ready" }) {
		t.Error("etcdbr's own info lines are missing")
	}
}

// TestDataDirGivenNoDefaultWarning: with --data-dir, etcd does not say that its data dir was
// empty and that it uses the default (checkLines checks every run for it).
func TestDataDirGivenNoDefaultWarning(t *testing.T) {
	t.Parallel()
	lines := logRun{etcdLevel: "info"}.run(t)
	checkLines(t, lines, "text")
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, `msg="starting an etcd server"`) }) {
		t.Error("etcd's info lines are missing: the check would see no warning either")
	}
}

// TestLogsConfigFile: with etcd's flags in a config file (--config-file), etcd's first lines
// (the warnings of the configuration's validation while the file loads) follow --log-format
// too, and the file's log-level holds.
func TestLogsConfigFile(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			lines := checkLines(t, logRun{etcdLevel: "warn", etcdbr: []string{"--log-format", format}, configFile: true}.run(t), format)
			warnings := 0
			for _, m := range lines {
				if m["component"] == "etcd" {
					if m["level"] != "WARN" {
						t.Errorf("an etcd line at %s with log-level: warn in the config file: %v", m["level"], m)
					}
					warnings++
				}
			}
			if warnings == 0 {
				t.Error("none of etcd's warnings")
			}
		})
	}
}

// TestMakeRunInterrupt: `make run` stopped by Ctrl-C (SIGINT to make's process group, as a
// terminal sends it to its foreground job) stops etcdbr cleanly, and make reports no failed
// recipe (etcdbr exits 0): make ends with 0, or by the interrupt itself, as make does on
// Ctrl-C, and prints no "***" line. The build is left out (-o build): the suite's binary
// runs.
func TestMakeRunInterrupt(t *testing.T) {
	t.Parallel()
	makefile, err := filepath.Abs("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	m := newMember(t, dir)
	cmd := exec.Command("make", "--no-print-directory", "-f", makefile, "-o", "build", "BIN="+binary, "run")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"ETCD_NAME="+m.Name,
		"ETCD_LISTEN_CLIENT_URLS="+m.ClientURL, "ETCD_ADVERTISE_CLIENT_URLS="+m.ClientURL,
		"ETCD_LISTEN_PEER_URLS="+m.PeerURL, "ETCD_INITIAL_ADVERTISE_PEER_URLS="+m.PeerURL,
		"ETCD_INITIAL_CLUSTER="+m.Name+"="+m.PeerURL)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out embeddedtest.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("make: %v", err)
	}
	var waitErr error
	done := make(chan struct{}) // closed once make ended: waitErr is its error
	go func() {
		waitErr = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("output of make run:\n%s", out.String())
		}
	})

	deadline := time.After(2 * time.Minute)
	for !strings.Contains(out.String(), "full snapshot taken") {
		select {
		case <-done:
			t.Fatalf("make run ended (%v) before etcdbr served", waitErr)
		case <-deadline:
			t.Fatal("etcdbr under make run took no full snapshot in 2m")
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("make run still running a minute after SIGINT")
	}
	var exit *exec.ExitError
	switch {
	case waitErr == nil:
	case errors.As(waitErr, &exit) && exit.Sys().(syscall.WaitStatus).Signal() == syscall.SIGINT:
	default:
		t.Errorf("make run ended with %v after SIGINT: neither 0 nor the interrupt", waitErr)
	}
	output := out.String()
	for l := range strings.Lines(output) {
		if strings.Contains(l, "***") {
			t.Errorf("make reports a failure: %s", l)
		}
	}
	if !strings.Contains(output, "signal=interrupt") || !strings.Contains(output, `msg="etcd stopped"`) {
		t.Error("etcdbr did not stop cleanly on the interrupt")
	}
}
