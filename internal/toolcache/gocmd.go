package toolcache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// goEnv is the environment of a go command run in a scratch module: the module alone
// (no workspace, no inherited GOFLAGS), with extra appended.
func goEnv(extra []string) []string {
	return append(append(os.Environ(), "GOWORK=off", "GOFLAGS=", "GO111MODULE=on"), extra...)
}

// Go runs the go command with args in dir (a scratch module), with extra environment
// variables, its output going to stderr.
func Go(ctx context.Context, dir string, env []string, args ...string) error {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir, cmd.Env = dir, goEnv(env)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// GoOutput runs the go command with args in dir and returns its standard output. A command
// that fails with output is not an error: `go mod download -json` reports its error in the
// JSON it prints.
func GoOutput(ctx context.Context, dir string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir, cmd.Env = dir, goEnv(nil)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) && len(out) > 0 {
			return out, nil
		}
		return nil, fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
	}
	return out, nil
}
