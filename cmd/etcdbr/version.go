package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"go.etcd.io/etcd/api/v3/version"

	"github.com/etcdbr/etcdbr/embedded"
)

// buildVersion is set at build time with -ldflags "-X main.buildVersion=...".
var buildVersion = ""

// VersionCmd is `etcdbr version`.
type VersionCmd struct{}

// Run prints the version.
func (VersionCmd) Run(env *Env) error {
	printVersion(env.Stdout)
	return nil
}

// etcdbrVersion returns etcdbr's own version: the one set at build time, else the module's.
func etcdbrVersion() string {
	if buildVersion != "" {
		return buildVersion
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// printVersion prints `etcdbr version`: etcdbr's version first, then etcd's and Go's.
func printVersion(w io.Writer) {
	fmt.Fprintf(w, "etcdbr version: %s\netcd Version: %s\nGo Version: %s\nGo OS/Arch: %s/%s\n",
		etcdbrVersion(), version.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// printEtcdVersion prints etcd's --version (`etcd --version`, `etcdbr run -- --version`):
// etcd's own lines in etcd's order, as scripts and health tooling parse them, then
// etcdbr's version. The Git SHA is etcd's (go.etcd.io/etcd/api/v3/version.GitSHA): etcd's
// release builds set it; built from the Go module it reads "Not provided (...)", as an
// etcd built with go build does.
func printEtcdVersion(w io.Writer) {
	fmt.Fprint(w, embedded.Version())
	fmt.Fprintf(w, "etcdbr Version: %s\n", etcdbrVersion())
}

// printEtcdHelp prints etcd's --help: etcd's usage and flags first and, invoked as etcd,
// etcdbr's own settings after them.
func printEtcdHelp(env *Env) error {
	fmt.Fprint(env.Stdout, embedded.Usage())
	if !env.AsEtcd {
		return nil
	}
	fmt.Fprint(env.Stdout, "\nThis etcd is etcdbr ("+etcdbrVersion()+"): it validates the data dir, restores it from backups "+
		"and backs etcd up to object storage.\nInvoked as etcd, every argument is an etcd flag: set etcdbr's settings below as "+
		"ETCDBR_* environment variables\n(e.g. ETCDBR_STORE=s3://bucket/prefix). As `etcdbr run` they are flags before `--`.\n\n")
	return runHelp(env.Stdout)
}
