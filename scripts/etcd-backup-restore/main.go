// Command etcd-backup-restore builds etcd-backup-restore's etcdbrctl (gardener/etcd-backup-
// restore) from the Go module proxy into a cache directory once and prints the binary's
// path. The test suite runs its snapshot command against a real etcd, and restores the
// store it writes with etcdbr (testsuite/migrate_test.go).
//
//	go run ./scripts/etcd-backup-restore          # prints the path, building it when missing
//	go run ./scripts/etcd-backup-restore -force   # builds it again
//
// The cache is $ETCDBR_EBR_CACHE, or etcdbr-ebr/<version> in the user's cache directory
// (~/.cache/etcdbr-ebr/v0.43.0 on Linux). A cold build takes about three minutes on two
// cores; progress goes to stderr, only the path to stdout.
//
// The module cannot be built with `go install`: its go.mod has a replace directive (a
// module pinned to another version of itself), which `go install pkg@version` refuses. So
// the build runs in a scratch module that requires it and repeats its replace directives.
package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/etcdbr/etcdbr/internal/toolcache"
)

// Module is etcd-backup-restore's module, Version the version built.
const (
	Module  = "github.com/gardener/etcd-backup-restore"
	Version = "v0.43.0"
)

// EnvCacheDir overrides the cache directory.
const EnvCacheDir = "ETCDBR_EBR_CACHE"

func main() {
	toolcache.Tool{Name: "etcdbrctl", Version: Version, EnvDir: EnvCacheDir, Cache: "etcdbr-ebr",
		Build: build, Slow: "about three minutes"}.Main()
}

// build makes the scratch module in work and builds etcdbrctl into bin.
func build(ctx context.Context, work, bin string) error {
	if err := toolcache.Go(ctx, work, nil, "mod", "init", "etcdbr.test/etcd-backup-restore-build"); err != nil {
		return err
	}
	out, err := toolcache.GoOutput(ctx, work, "mod", "download", "-json", Module+"@"+Version)
	if err != nil {
		return err
	}
	var mod struct{ GoMod, Error string }
	if err := json.Unmarshal(out, &mod); err != nil {
		return fmt.Errorf("read go mod download's answer: %w", err)
	}
	if mod.Error != "" || mod.GoMod == "" {
		return fmt.Errorf("go mod download %s@%s: %s", Module, Version, mod.Error)
	}
	var gomod struct {
		Replace []struct {
			Old struct{ Path, Version string }
			New struct{ Path, Version string }
		}
	}
	out, err = toolcache.GoOutput(ctx, work, "mod", "edit", "-json", mod.GoMod)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(out, &gomod); err != nil {
		return fmt.Errorf("read %s: %w", mod.GoMod, err)
	}
	edit := []string{"mod", "edit", "-require=" + Module + "@" + Version}
	for _, r := range gomod.Replace {
		if r.New.Version == "" {
			return fmt.Errorf("%s replaces %s with the directory %s, which a build outside its repository cannot use", mod.GoMod, r.Old.Path, r.New.Path)
		}
		old := r.Old.Path
		if r.Old.Version != "" {
			old += "@" + r.Old.Version
		}
		edit = append(edit, "-replace="+old+"="+r.New.Path+"@"+r.New.Version)
	}
	if err := toolcache.Go(ctx, work, nil, edit...); err != nil {
		return err
	}
	// Resolve the build list of the command and record its checksums.
	if err := toolcache.Go(ctx, work, nil, "get", Module+"@"+Version); err != nil {
		return err
	}
	ldflags := "-s -w -X " + Module + "/pkg/version.Version=" + Version
	return toolcache.Go(ctx, work, []string{"CGO_ENABLED=0"}, "build", "-trimpath", "-ldflags", ldflags, "-o", bin, Module)
}
