package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
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
	// CPU is the user and system time the process used (from its rusage).
	CPU            time.Duration
	Samples        int
	Stdout, Stderr []byte
}

func (p procStats) String() string {
	return fmt.Sprintf("wall %.2f s, peak RSS %.1f MiB, peak RssAnon %.1f MiB (%d samples)",
		p.Wall.Seconds(), float64(p.PeakRSS)/mib, float64(p.PeakAnon)/mib, p.Samples)
}

// runMeasured runs cmd to its end, sampling its memory, and fails if it fails; its output
// is kept in the stats.
func runMeasured(ctx context.Context, cmd *exec.Cmd) (procStats, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	c, err := startChild(ctx, cmd, sampleEvery)
	if err != nil {
		return procStats{}, err
	}
	st, err := c.wait()
	st.Stdout, st.Stderr = stdout.Bytes(), stderr.Bytes()
	if err != nil {
		return st, fmt.Errorf("%s: %w\n%s", cmd.Path, err, stderr.Bytes())
	}
	return st, nil
}

// child is a process started by startChild, its memory sampled until it ends.
type child struct {
	cmd   *exec.Cmd
	start time.Time
	done  chan struct{} // closed when the process ended and stats and err are final
	stats procStats
	err   error
}

// startChild starts cmd (its output already directed) and samples its memory every sample
// until it ends (0: never; reading /proc/PID/status 200 times a second costs a few percent
// of a CPU per process, and takes the lock of its memory map); ctx ending kills it.
func startChild(ctx context.Context, cmd *exec.Cmd, sample time.Duration) (*child, error) {
	c := &child{cmd: cmd, done: make(chan struct{})}
	c.start = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	go func() {
		defer close(c.done)
		var ticks <-chan time.Time
		if sample > 0 {
			tick := time.NewTicker(sample)
			defer tick.Stop()
			ticks = tick.C
		}
		for {
			select {
			case err := <-exited:
				c.stats.Wall, c.err = time.Since(c.start), err
				if ps := cmd.ProcessState; ps != nil {
					c.stats.CPU = ps.UserTime() + ps.SystemTime()
				}
				return
			case <-ticks:
				if hwm, anon, ok := readStatus(status); ok {
					c.stats.PeakRSS, c.stats.PeakAnon = max(c.stats.PeakRSS, hwm), max(c.stats.PeakAnon, anon)
					c.stats.Samples++
				}
			case <-ctx.Done():
				cmd.Process.Kill()
			}
		}
	}()
	return c, nil
}

// exited reports whether the process ended.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// wait waits for the process to end.
func (c *child) wait() (procStats, error) {
	<-c.done
	return c.stats, c.err
}

// stop sends sig and waits (at most a minute, then kills) for the process to end; a process
// killed by the signal sent is not an error.
func (c *child) stop(sig syscall.Signal) (procStats, error) {
	if !c.exited() {
		c.cmd.Process.Signal(sig)
	}
	select {
	case <-c.done:
	case <-time.After(time.Minute):
		c.cmd.Process.Kill()
		<-c.done
		return c.stats, fmt.Errorf("%s did not stop within a minute of %v: killed", c.cmd.Path, sig)
	}
	var exit *exec.ExitError
	if errors.As(c.err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == sig {
			return c.stats, nil
		}
	}
	return c.stats, c.err
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

// clockTicks is the unit of the times in /proc/PID/stat (USER_HZ, 100 on every Linux
// architecture Go supports).
const clockTicks = 100

// cpuTime is the user and system time the running process pid used so far.
func cpuTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces: count after it.
	_, rest, ok := strings.Cut(string(data), ") ")
	fields := strings.Fields(rest)
	if !ok || len(fields) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, data)
	}
	var ticks int64
	for _, f := range fields[11:13] { // utime, stime: fields 14 and 15 of the line
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, data)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// runtimeCPUs is the number of CPUs this process may use.
func runtimeCPUs() int { return runtime.NumCPU() }
