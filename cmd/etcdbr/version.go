package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"go.etcd.io/etcd/api/v3/version"
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

func printVersion(w io.Writer) {
	v := buildVersion
	if v == "" {
		v = "(devel)"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
			v = bi.Main.Version
		}
	}
	fmt.Fprintf(w, "etcdbr version: %s\netcd Version: %s\nGo Version: %s\nGo OS/Arch: %s/%s\n",
		v, version.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
