package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// server is an etcd serving clients from a child process: plain etcd or etcdbr run.
type server struct {
	*child
	Endpoint string
	log      *os.File
}

// serverSpec says how to start a server.
type serverSpec struct {
	Etcdbr  bool     // etcdbr run, else plain etcd
	DataDir string   // the member's data dir
	Store   string   // etcdbr run's store URL
	Args    []string // more etcdbr run flags (before --)
	API     string   // etcdbr run's --listen-api (default: none)
	LogPath string   // where its output goes
}

// startServer starts a member named bench on free loopback ports (its peer URL is the one
// benchRestore gave the restored member; a single member does not check it on restart).
func startServer(ctx context.Context, bins binaries, spec serverSpec) (*server, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	etcdFlags := []string{
		"--name", "bench", "--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "bench=" + peer,
		"--quota-backend-bytes", fmt.Sprint(int64(8 << 30)), "--log-level", "warn",
	}
	var cmd *exec.Cmd
	if spec.Etcdbr {
		args := append([]string{"--log-format", "json", "run", "--data-dir", spec.DataDir, "--store", spec.Store, "--listen-api=" + spec.API}, spec.Args...)
		cmd = exec.CommandContext(ctx, bins.Etcdbr, append(append(args, "--"), etcdFlags...)...)
	} else {
		cmd = exec.CommandContext(ctx, bins.Etcd, append([]string{"--data-dir", spec.DataDir}, etcdFlags...)...)
	}
	log, err := os.Create(spec.LogPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = log, log
	c, err := startChild(ctx, cmd, sampleEvery)
	if err != nil {
		log.Close()
		return nil, err
	}
	return &server{child: c, Endpoint: client, log: log}, nil
}

// ready waits until a linearizable read succeeds and returns how long after the start it
// did.
func (s *server) ready(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	cli, err := newClient(s.Endpoint)
	if err != nil {
		return 0, err
	}
	defer cli.Close()
	deadline := time.Now().Add(timeout)
	for {
		rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		_, err := cli.Get(rctx, "ready-probe")
		cancel()
		if err == nil {
			return time.Since(s.start), nil
		}
		switch {
		case s.exited():
			_, werr := s.wait()
			return 0, fmt.Errorf("%s ended before it was ready (%v); its log: %s", s.cmd.Path, werr, s.log.Name())
		case ctx.Err() != nil:
			return 0, ctx.Err()
		case time.Now().After(deadline):
			return 0, fmt.Errorf("%s not ready after %v (%v); its log: %s", s.cmd.Path, timeout, err, s.log.Name())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stop ends the server with sig (SIGTERM: a clean stop; SIGKILL: a crash).
func (s *server) stop(sig syscall.Signal) (procStats, error) {
	defer s.log.Close()
	st, err := s.child.stop(sig)
	if err != nil {
		return st, fmt.Errorf("%w; its log: %s", err, s.log.Name())
	}
	return st, nil
}

// newClient is a client of endpoint that logs nothing.
func newClient(endpoint string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// freePorts returns n loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// hasFlag reports whether etcdbr run knows the flag name (e.g. --validation).
func hasFlag(ctx context.Context, etcdbr, name string) bool {
	out, _ := exec.CommandContext(ctx, etcdbr, "run", "--help").CombinedOutput()
	return strings.Contains(string(out), name)
}

// dirSize is the size of the files under dir.
func dirSize(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			n += info.Size()
		}
		return nil
	})
	return n
}
