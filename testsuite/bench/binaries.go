package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// binaries are the programs measured.
type binaries struct {
	Etcdbr, Etcdutl, Etcdctl string
	// Etcd is plain etcd (go.etcd.io/etcd/server/v3's main, the version in go.mod).
	Etcd string
}

// build builds the binaries not given into dir.
//
// etcdutl and etcdctl are tool dependencies of the module. Plain etcd is built from
// go.etcd.io/etcd/server/v3 at the version and with the dependency versions of go.mod, but
// through a copy of go.mod and go.sum (-modfile): its gRPC proxy needs two modules the
// module does not require, which go get adds to the copy only.
func (b *binaries) build(ctx context.Context, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, t := range []struct {
		path *string
		name string
		pkg  string
	}{
		{&b.Etcdbr, "etcdbr", "github.com/etcdbr/etcdbr/cmd/etcdbr"},
		{&b.Etcdutl, "etcdutl", "go.etcd.io/etcd/etcdutl/v3"},
		{&b.Etcdctl, "etcdctl", "go.etcd.io/etcd/etcdctl/v3"},
	} {
		if *t.path != "" {
			continue
		}
		*t.path = filepath.Join(dir, t.name)
		if err := goCmd(ctx, "build", "-o", *t.path, t.pkg); err != nil {
			return err
		}
	}
	if b.Etcd == "" {
		b.Etcd = filepath.Join(dir, "etcd")
		if err := buildEtcd(ctx, filepath.Join(dir, "etcd-modfile"), b.Etcd); err != nil {
			return err
		}
	}
	return nil
}

// buildEtcd builds plain etcd into out, with a go.mod copied into dir.
func buildEtcd(ctx context.Context, dir, out string) error {
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, name := range []string{"go.mod", "go.sum"} {
		data, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	version, err := goOutput(ctx, "list", "-m", "-f", "{{.Version}}", "go.etcd.io/etcd/server/v3")
	if err != nil {
		return err
	}
	modfile := "-modfile=" + filepath.Join(dir, "go.mod")
	if err := goCmd(ctx, "get", modfile, "go.etcd.io/etcd/server/v3@"+version); err != nil {
		return err
	}
	return goCmd(ctx, "build", modfile, "-o", out, "go.etcd.io/etcd/server/v3")
}

// moduleRoot is the directory of this module's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	gomod, err := goOutput(ctx, "env", "GOMOD")
	if err != nil {
		return "", err
	}
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("run the benchmark inside the etcdbr module (go env GOMOD is empty)")
	}
	return filepath.Dir(gomod), nil
}

func goCmd(ctx context.Context, args ...string) error {
	if out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

func goOutput(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", args...).Output()
	if err != nil {
		return "", fmt.Errorf("go %s: %v", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}
