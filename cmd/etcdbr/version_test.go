package main

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// buildEtcd builds etcd's own server binary from the etcd module in go.mod.
func buildEtcd(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds etcd's binary")
	}
	bin := filepath.Join(t.TempDir(), "etcd")
	out, err := exec.Command("go", "build", "-o", bin, "go.etcd.io/etcd/server/v3").CombinedOutput()
	if err != nil {
		t.Fatalf("go build go.etcd.io/etcd/server/v3: %v\n%s", err, out)
	}
	return bin
}

// runAsEtcd runs etcdbr's command line in-process under the name etcd.
func runAsEtcd(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(append([]string{"/usr/local/bin/etcd"}, args...), &stdout, &stderr)
	if stderr.Len() > 0 {
		t.Logf("stderr: %s", stderr.String())
	}
	return code, stdout.String()
}

// Invoked as etcd, --version prints etcd 3.6's own lines, in etcd's order and with the same
// values (the same etcd module and Go toolchain), then etcdbr's version after them.
func TestEtcdVersionLikeEtcd(t *testing.T) {
	etcd := buildEtcd(t)
	out, err := exec.Command(etcd, "--version").Output()
	if err != nil {
		t.Fatalf("etcd --version: %v", err)
	}
	want := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	code, got := runAsEtcd(t, "--version")
	if code != exitOK {
		t.Fatalf("etcd --version exited %d", code)
	}
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(want) != 4 || len(lines) != len(want)+1 {
		t.Fatalf("etcd --version printed\n%s\netcdbr as etcd printed\n%s\nwant etcd's %d lines and one of etcdbr", out, got, len(want))
	}
	for i, w := range want {
		prefix, _, ok := strings.Cut(w, ": ")
		if !ok {
			t.Fatalf("etcd's line %q has no \"name: value\" shape", w)
		}
		if !strings.HasPrefix(lines[i], prefix+": ") {
			t.Errorf("line %d: %q, want etcd's prefix %q", i+1, lines[i], prefix+": ")
		}
		if lines[i] != w {
			t.Errorf("line %d: %q, etcd's is %q", i+1, lines[i], w)
		}
	}
	if !regexp.MustCompile(`^etcdbr Version: \S+`).MatchString(lines[len(lines)-1]) {
		t.Errorf("last line %q, want etcdbr's version", lines[len(lines)-1])
	}
	if !regexp.MustCompile(`^etcd Version: 3\.6\.\d+$`).MatchString(lines[0]) {
		t.Errorf("first line %q, want etcd 3.6's version", lines[0])
	}

	// etcdbr run passes --version to etcd's flags the same way.
	var stdout, stderr bytes.Buffer
	if code := run([]string{"etcdbr", "run", "--", "--version"}, &stdout, &stderr); code != exitOK || stdout.String() != got {
		t.Errorf("etcdbr run -- --version exited %d and printed\n%s\nwant\n%s", code, stdout.String(), got)
	}
}

// helpSections returns the sections of an etcd --help text ("Member:", ...) in order, each
// with the names of the flags listed under it in order.
func helpSections(help string) (titles []string, flags map[string][]string) {
	flags = map[string][]string{}
	section := regexp.MustCompile(`^([A-Z][A-Za-z ]*):$`)
	flag := regexp.MustCompile(`^  --([a-z0-9.-]+)`)
	title := ""
	for _, line := range strings.Split(help, "\n") {
		if m := section.FindStringSubmatch(line); m != nil {
			title = m[1]
			titles = append(titles, title)
		} else if m := flag.FindStringSubmatch(line); m != nil && title != "" {
			flags[title] = append(flags[title], m[1])
		}
	}
	return titles, flags
}

// Invoked as etcd, --help reads like etcd's: etcd's sections in etcd's order, each with
// etcd's flags in etcd's order and etcd's layout ("--name 'default'", the description
// indented below), then etcdbr's settings (ETCDBR_* variables) after them.
func TestEtcdHelpLikeEtcd(t *testing.T) {
	etcd := buildEtcd(t)
	out, err := exec.Command(etcd, "--help").Output()
	if err != nil {
		t.Fatalf("etcd --help: %v", err)
	}
	code, got := runAsEtcd(t, "--help")
	if code != exitOK {
		t.Fatalf("etcd --help exited %d", code)
	}
	if !strings.HasPrefix(got, "Usage:\n\n  etcd [flags]\n") {
		t.Fatalf("etcd --help does not open with etcd's usage:\n%.300s", got)
	}
	additions := strings.Index(got, "This etcd is etcdbr")
	if additions < 0 || !strings.Contains(got[additions:], "$ETCDBR_STORE") {
		t.Fatalf("etcd --help does not end with etcdbr's settings:\n%s", got)
	}
	etcdPart := got[:additions]
	if strings.Contains(etcdPart, "ETCDBR_") {
		t.Errorf("etcdbr's settings appear among etcd's flags")
	}

	wantTitles, wantFlags := helpSections(string(out))
	gotTitles, gotFlags := helpSections(etcdPart)
	// etcd writes its usage to standard error; etcdbr writes it first on standard output.
	gotTitles = slices.DeleteFunc(gotTitles, func(s string) bool { return s == "Usage" })
	if len(wantTitles) < 5 || len(wantFlags["Member"]) < 10 {
		t.Fatalf("found the sections %q in etcd's help, want all of them:\n%s", wantTitles, out)
	}
	if want := append(slices.Clone(wantTitles), "Other"); !slices.Equal(gotTitles, want) {
		t.Errorf("sections %q, etcd's are %q (then Other, for the flags etcd's help leaves out)", gotTitles, wantTitles)
	}
	for _, title := range wantTitles {
		if !slices.Equal(gotFlags[title], wantFlags[title]) {
			t.Errorf("section %s lists\n%q\netcd's lists\n%q", title, gotFlags[title], wantFlags[title])
		}
	}
	for _, line := range []string{
		"  --name 'default'\n    Human-readable name for this member.\n", // a flag with a value
		"  --memory-mlock\n    ",    // a boolean that defaults to false
		"  --pre-vote 'true'\n    ", // one that defaults to true
	} {
		if !strings.Contains(etcdPart, line) || !strings.Contains(string(out), line) {
			t.Errorf("%q is not in both helps: etcd's layout differs", line)
		}
	}
}
