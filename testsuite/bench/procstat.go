package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// sampleEvery is how often a child's memory is sampled.
const sampleEvery = 5 * time.Millisecond

// procStats is what a child process used.
type procStats struct {
	Wall time.Duration
	// PeakRSS is the peak resident set (VmHWM, the kernel's high-water mark, last read
	// before the process ended; not ru_maxrss, which counts the parent's memory at the
	// fork); PeakAnon the highest RssAnon sampled from /proc/PID/status: the process's own
	// memory, without file-backed pages such as bbolt's mmap of the db.
	PeakRSS, PeakAnon int64
	Samples           int
	Stdout, Stderr    []byte
}

func (p procStats) String() string {
	return fmt.Sprintf("wall %.2f s, peak RSS %.1f MiB, peak RssAnon %.1f MiB (%d samples)",
		p.Wall.Seconds(), float64(p.PeakRSS)/mib, float64(p.PeakAnon)/mib, p.Samples)
}

// runMeasured runs cmd to its end, sampling its memory, and fails if it fails.
func runMeasured(ctx context.Context, cmd *exec.Cmd) (procStats, error) {
	var st procStats
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return st, err
	}
	status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	var err error
wait:
	for {
		select {
		case err = <-done:
			break wait
		case <-tick.C:
			if hwm, anon, ok := readStatus(status); ok {
				st.PeakRSS, st.PeakAnon = max(st.PeakRSS, hwm), max(st.PeakAnon, anon)
				st.Samples++
			}
		case <-ctx.Done():
			cmd.Process.Kill()
		}
	}
	st.Wall = time.Since(start)
	st.Stdout, st.Stderr = stdout.Bytes(), stderr.Bytes()
	if err != nil {
		return st, fmt.Errorf("%s: %w\n%s", cmd.Path, err, stderr.Bytes())
	}
	return st, nil
}

// readStatus reads VmHWM (the peak RSS so far) and RssAnon (in bytes) from a
// /proc/PID/status file.
func readStatus(path string) (hwm, anon int64, ok bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	found := 0
	for sc.Scan() {
		name, value, _ := strings.Cut(sc.Text(), ":")
		var dst *int64
		switch name {
		case "VmHWM":
			dst = &hwm
		case "RssAnon":
			dst = &anon
		default:
			continue
		}
		fields := strings.Fields(value)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, 0, false
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, 0, false
		}
		*dst = kb * 1024
		found++
	}
	return hwm, anon, found == 2
}
