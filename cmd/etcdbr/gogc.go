package main

import (
	"bufio"
	"bytes"
	"io/fs"
	"os"
	"path"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
)

// startingGOGC is Go's GOGC while etcd starts. etcd's start reads the whole db into its
// key index (about a million small objects for a million keys) and the heap grows from
// nothing to that size; at the default of 100 the collector runs again at every doubling,
// about a sixth of the start's CPU when three members start on two cores (docs/bench.md).
// The price: a higher peak of the heap during the start only (for a million keys of 1 KiB,
// 592 MB of anonymous memory when etcd is ready instead of 343 MB).
const startingGOGC = 400

// goCollector raises GOGC to startingGOGC while etcd starts (supervisor.Config.EtcdStarting),
// unless GOGC or GOMEMLIMIT is set in the environment: then the user's settings hold. When
// the process's cgroup limits its memory, the collector also gets a soft limit of
// nine tenths of that meanwhile, so that the raised GOGC never costs the process an OOM
// kill: near the limit the collector runs as often as it must. It is the CLI's: GOGC is
// the process's.
type goCollector struct {
	mu        sync.Mutex // guards starts and the prev fields
	starts    int        // etcd starts under way
	prevGOGC  int        // GOGC before the first of them
	prevLimit int64      // the memory limit before the first of them
	disabled  bool       // the environment sets GOGC or GOMEMLIMIT
	limit     int64      // the cgroup's memory limit, 0: none
}

func newGoCollector() *goCollector {
	_, gogc := os.LookupEnv("GOGC")
	_, limit := os.LookupEnv("GOMEMLIMIT")
	return &goCollector{disabled: gogc || limit, limit: cgroupMemoryLimit(os.DirFS("/"))}
}

// etcdStarting raises GOGC until the returned function is called (once).
func (c *goCollector) etcdStarting() (ended func()) {
	if c.disabled {
		return func() {}
	}
	c.mu.Lock()
	if c.starts == 0 {
		c.prevLimit = debug.SetMemoryLimit(-1)
		if c.limit > 0 {
			debug.SetMemoryLimit(c.limit / 10 * 9)
		}
		c.prevGOGC = debug.SetGCPercent(startingGOGC)
	}
	c.starts++
	c.mu.Unlock()
	return sync.OnceFunc(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.starts--; c.starts == 0 {
			debug.SetGCPercent(c.prevGOGC)
			debug.SetMemoryLimit(c.prevLimit)
		}
	})
}

// cgroupMemoryLimit returns the memory limit of the process's cgroup, read from fsys (the
// root): cgroup v2's memory.max or v1's memory.limit_in_bytes, of the cgroup
// /proc/self/cgroup names or else of the root of the hierarchy (a container sees its own
// there). 0 when there is none, or it cannot be read.
func cgroupMemoryLimit(fsys fs.FS) int64 {
	data, err := fs.ReadFile(fsys, "proc/self/cgroup")
	if err != nil {
		return 0
	}
	var files []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		// hierarchy-ID:controllers:path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			files = append(files, path.Join("sys/fs/cgroup", parts[2], "memory.max"), "sys/fs/cgroup/memory.max")
		case strings.Contains(","+parts[1]+",", ",memory,"):
			files = append(files, path.Join("sys/fs/cgroup/memory", parts[2], "memory.limit_in_bytes"),
				"sys/fs/cgroup/memory/memory.limit_in_bytes")
		}
	}
	for _, f := range files {
		b, err := fs.ReadFile(fsys, f)
		if err != nil {
			continue
		}
		v := strings.TrimSpace(string(b))
		if v == "max" {
			return 0
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 || n >= 1<<62 { // v1 says "none" with a number near 2^63
			return 0
		}
		return n
	}
	return 0
}
