// Command kube-apiserver builds kube-apiserver from the Go module proxy into a
// cache directory once and prints the binary's path. The Kubernetes end-to-end
// tests (testsuite/kube) run it against etcdbr.
//
//	go run ./scripts/kube-apiserver          # prints the path, building it when missing
//	go run ./scripts/kube-apiserver -force   # builds it again
//
// The cache is $ETCDBR_KUBE_CACHE, or etcdbr-kube/<version> in the user's cache
// directory (~/.cache/etcdbr-kube/v1.34.4 on Linux). A cold build takes a few
// minutes on two cores; progress goes to stderr, only the path to stdout.
//
// k8s.io/kubernetes cannot be built with `go install`: its go.mod replaces the
// staging modules (k8s.io/api, k8s.io/apiserver, ...) with directories of its
// own repository. So the build runs in a scratch module that requires
// k8s.io/kubernetes and replaces each of those staging modules with the same
// module as published at the matching v0.x version.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/etcdbr/etcdbr/internal/toolcache"
)

// Version is the kube-apiserver built; StagingVersion is the version its
// staging modules are published at.
const (
	Version        = "v1.34.4"
	StagingVersion = "v0.34.4"
)

// EnvCacheDir overrides the cache directory.
const EnvCacheDir = "ETCDBR_KUBE_CACHE"

func main() {
	toolcache.Tool{Name: "kube-apiserver", Version: Version, EnvDir: EnvCacheDir, Cache: "etcdbr-kube",
		Build: build, Slow: "a few minutes"}.Main()
}

// build makes the scratch module in work and builds kube-apiserver into bin.
func build(ctx context.Context, work, bin string) error {
	if err := toolcache.Go(ctx, work, nil, "mod", "init", "etcdbr.test/kube-apiserver-build"); err != nil {
		return err
	}
	out, err := toolcache.GoOutput(ctx, work, "mod", "download", "-json", "k8s.io/kubernetes@"+Version)
	if err != nil {
		return err
	}
	var mod struct{ GoMod, Error string }
	if err := json.Unmarshal(out, &mod); err != nil {
		return fmt.Errorf("read go mod download's answer: %w", err)
	}
	if mod.Error != "" || mod.GoMod == "" {
		return fmt.Errorf("go mod download k8s.io/kubernetes@%s: %s", Version, mod.Error)
	}
	kube, err := readGoMod(ctx, work, mod.GoMod)
	if err != nil {
		return err
	}
	staging := kube.stagingModules()
	if len(staging) == 0 {
		return fmt.Errorf("%s replaces no module with ./staging", mod.GoMod)
	}
	edit := []string{"mod", "edit", "-require=k8s.io/kubernetes@" + Version}
	for _, m := range staging {
		edit = append(edit, "-replace="+m+"="+m+"@"+StagingVersion)
	}
	// Kubernetes' own build runs with the GODEBUG defaults its go.mod sets.
	for _, g := range kube.Godebug {
		edit = append(edit, "-godebug="+g.Key+"="+g.Value)
	}
	if err := toolcache.Go(ctx, work, nil, edit...); err != nil {
		return err
	}
	// Resolve the whole build list of the command and record its checksums.
	if err := toolcache.Go(ctx, work, nil, "get", "k8s.io/kubernetes/cmd/kube-apiserver@"+Version); err != nil {
		return err
	}

	ldflags := strings.Join([]string{
		"-s", "-w",
		"-X k8s.io/component-base/version.gitVersion=" + Version,
		"-X k8s.io/component-base/version.gitTreeState=clean",
		"-X k8s.io/client-go/pkg/version.gitVersion=" + Version,
	}, " ")
	if err := toolcache.Go(ctx, work, []string{"CGO_ENABLED=0"},
		"build", "-trimpath", "-ldflags", ldflags, "-o", bin, "k8s.io/kubernetes/cmd/kube-apiserver"); err != nil {
		return err
	}
	return nil
}

// goMod is the part of a go.mod file (as `go mod edit -json` prints it) the
// build reads.
type goMod struct {
	Godebug []struct{ Key, Value string }
	Replace []struct {
		Old struct{ Path string }
		New struct{ Path, Version string }
	}
}

// readGoMod reads the go.mod file at path.
func readGoMod(ctx context.Context, work, path string) (goMod, error) {
	var gomod goMod
	out, err := toolcache.GoOutput(ctx, work, "mod", "edit", "-json", path)
	if err != nil {
		return gomod, err
	}
	if err := json.Unmarshal(out, &gomod); err != nil {
		return gomod, fmt.Errorf("read %s: %w", path, err)
	}
	return gomod, nil
}

// stagingModules lists the modules that the go.mod replaces with directories
// under ./staging.
func (m goMod) stagingModules() []string {
	var mods []string
	for _, r := range m.Replace {
		if r.New.Version == "" && strings.HasPrefix(r.New.Path, "./staging/") {
			mods = append(mods, r.Old.Path)
		}
	}
	return mods
}
