package main

import (
	"io"
	"log/slog"
	"syscall"
	"testing"
	"time"
)

// The first SIGTERM cancels the context (clean stop); a second one exits at once.
func TestSignalContext(t *testing.T) {
	exited := make(chan int, 1)
	ctx, stop := signalContext(slog.New(slog.NewTextHandler(io.Discard, nil)), func(code int) { exited <- code })
	defer stop()

	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the first SIGTERM did not cancel the context")
	}
	select {
	case code := <-exited:
		t.Fatalf("exited with %d after one signal", code)
	default:
	}

	if err := syscall.Kill(syscall.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-exited:
		if code != exitFailure {
			t.Fatalf("exit code %d after the second signal, want %d", code, exitFailure)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second signal did not exit")
	}
}
