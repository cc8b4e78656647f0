package storetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// Kind is a kind of object-storage server.
type Kind string

// The server kinds.
const (
	S3    Kind = "s3"    // MinIO
	GCS   Kind = "gcs"   // fake-gcs-server
	Azure Kind = "azure" // Azurite
)

// Kinds are all server kinds.
var Kinds = []Kind{S3, GCS, Azure}

// Credentials of the test servers. They only ever listen on loopback.
const (
	MinIOUser       = "etcdbr-test"
	MinIOPassword   = "etcdbr-test-secret"
	AzuriteAccount  = "devstoreaccount1"
	AzuriteKey      = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
	readyTimeout    = 60 * time.Second
	stopGracePeriod = 5 * time.Second
)

// Server is a running server process. Its methods are not safe for concurrent use.
type Server struct {
	Kind     Kind
	Endpoint string // http://127.0.0.1:<port>

	bins Binaries
	dir  string // its data
	port int
	log  *os.File
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Start runs a server of the given kind on a free loopback port with its data
// in dir, and waits until it answers. Its output goes to dir/../<kind>.log.
func Start(ctx context.Context, kind Kind, bins Binaries, dir string) (*Server, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("start %s server: %w", kind, err)
	}
	s := &Server{Kind: kind, bins: bins, dir: dir}
	var errs []error
	// A port found free can be taken before the server binds it: try again.
	for range 5 {
		port, err := freePort()
		if err != nil {
			return nil, fmt.Errorf("start %s server: %w", kind, err)
		}
		s.port = port
		s.Endpoint = "http://127.0.0.1:" + strconv.Itoa(port)
		err = s.start(ctx)
		if err == nil {
			return s, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("start %s server: %w", kind, errors.Join(errs...))
}

// Restart starts the server again on the same port and data, after Stop or Kill.
func (s *Server) Restart(ctx context.Context) error {
	if s.running() {
		return fmt.Errorf("restart %s server: it is still running", s.Kind)
	}
	var err error
	// The port can stay busy for a moment after the process died.
	for range 10 {
		if err = s.start(ctx); err == nil {
			return nil
		}
		if ctx.Err() != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("restart %s server: %w", s.Kind, err)
}

// Kill stops the server at once (SIGKILL), like a crash, and waits for it to exit.
func (s *Server) Kill() {
	if !s.running() {
		return
	}
	_ = killGroup(s.cmd)
	<-s.done
	s.log.Close()
}

// Stop asks the server to stop (SIGINT), kills it if it has not exited after
// a grace period, and waits for it to exit.
func (s *Server) Stop() {
	if !s.running() {
		return
	}
	_ = terminate(s.cmd)
	select {
	case <-s.done:
	case <-time.After(stopGracePeriod):
	}
	s.Kill()
}

func (s *Server) running() bool {
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// start runs the process on s.port and waits until it is ready.
func (s *Server) start(ctx context.Context) error {
	cmd, probe, err := s.command()
	if err != nil {
		return err
	}
	log, err := os.OpenFile(filepath.Join(filepath.Dir(s.dir), string(s.Kind)+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = log, log
	detach(cmd)
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("run %s: %w", cmd.Path, err)
	}
	s.cmd, s.log, s.done = cmd, log, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	err = s.waitReady(ctx, probe)
	if err == nil {
		// Another process could have answered on a port our server failed
		// to bind: ours exits then.
		select {
		case <-s.done:
			err = fmt.Errorf("%s exited after %s answered", s.cmd.Path, s.Endpoint)
		case <-time.After(200 * time.Millisecond):
			return nil
		}
	}
	s.Kill()
	return fmt.Errorf("%w (its log: %s)", err, log.Name())
}

// command builds the server's command line and the URL that answers once it serves.
func (s *Server) command() (*exec.Cmd, string, error) {
	addr := "127.0.0.1:" + strconv.Itoa(s.port)
	port := strconv.Itoa(s.port)
	switch s.Kind {
	case S3:
		cmd := exec.Command(s.bins.MinIO, "server", "--quiet", "--address", addr, s.dir)
		cmd.Env = append(os.Environ(),
			"MINIO_ROOT_USER="+MinIOUser, "MINIO_ROOT_PASSWORD="+MinIOPassword,
			"MINIO_BROWSER=off", "MINIO_UPDATE=off")
		return cmd, s.Endpoint + "/minio/health/ready", nil
	case GCS:
		cmd := exec.Command(s.bins.FakeGCS, "-scheme", "http", "-host", "127.0.0.1", "-port", port,
			"-external-url", s.Endpoint, "-public-host", addr,
			"-backend", "filesystem", "-filesystem-root", s.dir, "-log-level", "error")
		return cmd, s.Endpoint + "/storage/v1/b", nil
	case Azure:
		cmd := exec.Command(s.bins.Node, s.bins.Azurite, "--blobHost", "127.0.0.1", "--blobPort", port,
			"--location", s.dir, "--skipApiVersionCheck", "--disableProductStyleUrl", "--silent")
		// Any HTTP answer (Azurite says 400 to a bare GET) means it serves.
		return cmd, s.Endpoint + "/", nil
	default:
		return nil, "", fmt.Errorf("unknown server kind %q", s.Kind)
	}
}

// waitReady polls probe until it answers with an HTTP status (for Azurite any,
// for the others 200).
func (s *Server) waitReady(ctx context.Context, probe string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, probe, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || s.Kind == Azure {
				return nil
			}
		}
		select {
		case <-s.done:
			return fmt.Errorf("%s exited before serving on %s", s.cmd.Path, s.Endpoint)
		case <-ctx.Done():
			return fmt.Errorf("%s does not serve on %s: %w", s.cmd.Path, s.Endpoint, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
