package snapstore

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// The test binary runs as an uploading child process when helperEnv is set:
// the tests kill it mid-upload, and measure its memory.
const (
	helperEnv     = "ETCDBR_SNAPSTORE_TEST_HELPER"
	helperURL     = "ETCDBR_SNAPSTORE_TEST_HELPER_URL"
	helperSize    = "ETCDBR_SNAPSTORE_TEST_HELPER_SIZE"
	helperRev     = "ETCDBR_SNAPSTORE_TEST_HELPER_REV"
	progressEvery = 16 << 20
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		if err := uploadHelper(); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// uploadHelper uploads a generated payload of helperSize bytes as the full
// snapshot of revision helperRev to the store at helperURL, then reads it
// back and checks it. It prints one line per step:
//
//	progress <bytes written so far>   (every 16 MiB)
//	committed <key> <stored size>
//	verified <sha256 of the payload>
//	peak-rss <kB>                     (VmHWM: the process's peak resident set)
func uploadHelper() error {
	ctx := context.Background()
	size, err := strconv.ParseInt(os.Getenv(helperSize), 10, 64)
	if err != nil {
		return err
	}
	rev, err := strconv.ParseInt(os.Getenv(helperRev), 10, 64)
	if err != nil {
		return err
	}
	s, err := Open(ctx, os.Getenv(helperURL), Options{})
	if err != nil {
		return err
	}
	defer s.Close()
	w, err := s.Create(ctx, catalog.Snapshot{Kind: catalog.KindFull, Revision: rev, Time: time.Now()})
	if err != nil {
		return err
	}
	defer w.Abort()
	written := sha256.New()
	src := io.TeeReader(newGenerator(size), written)
	buf := make([]byte, 1<<20)
	var n int64
	for {
		m, err := src.Read(buf)
		if m > 0 {
			if _, err := w.Write(buf[:m]); err != nil {
				return err
			}
			before := n
			n += int64(m)
			if n/progressEvery != before/progressEvery {
				fmt.Println("progress", n)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	snap, err := w.Commit()
	if err != nil {
		return err
	}
	fmt.Println("committed", snap.Key, snap.Size)
	r, err := s.Open(ctx, snap)
	if err != nil {
		return err
	}
	defer r.Close()
	read := sha256.New()
	if _, err := io.CopyBuffer(read, r, buf); err != nil {
		return err
	}
	if got, want := hex.EncodeToString(read.Sum(nil)), hex.EncodeToString(written.Sum(nil)); got != want {
		return fmt.Errorf("read back sha256 %s, wrote %s", got, want)
	}
	fmt.Println("verified", hex.EncodeToString(read.Sum(nil)))
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return err
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			fmt.Println("peak-rss", strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
		}
	}
	return nil
}

// helperProc is a running uploadHelper.
type helperProc struct {
	cmd   *exec.Cmd
	lines chan string // closed at the end of its output
	done  chan error
}

// startHelper runs uploadHelper in a child process (with this process's
// environment, so the provider's variables too).
func startHelper(t *testing.T, url string, size, rev int64) *helperProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		helperEnv+"=upload", helperURL+"="+url,
		helperSize+"="+strconv.FormatInt(size, 10), helperRev+"="+strconv.FormatInt(rev, 10))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helperProc{cmd: cmd, lines: make(chan string, 1024), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
		close(h.lines)
		h.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		for range h.lines {
		}
	})
	return h
}

// waitFor returns the fields of the first line starting with word, failing
// the test if the process ends or prints an error first.
func (h *helperProc) waitFor(t *testing.T, word string, timeout time.Duration) []string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-h.lines:
			if !ok {
				t.Fatalf("helper exited (%v) before printing %q", <-h.done, word)
			}
			fields := strings.Fields(line)
			if len(fields) > 0 && fields[0] == "error" {
				t.Fatalf("helper: %s", line)
			}
			if len(fields) > 0 && fields[0] == word {
				return fields[1:]
			}
		case <-deadline:
			t.Fatalf("helper printed no %q line in %v", word, timeout)
		}
	}
}
