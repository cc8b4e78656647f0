package main

import (
	"runtime/debug"
	"testing"
	"testing/fstest"
)

func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// GOGC is raised while etcd starts, back to what it was once every start ended, and left
// alone when the environment sets it; under a cgroup's memory limit the collector gets a
// soft limit below it meanwhile.
func TestGoCollectorWhileEtcdStarts(t *testing.T) {
	t.Setenv("GOGC", "")
	before, beforeLimit := gcPercent(), debug.SetMemoryLimit(-1)
	c := &goCollector{limit: 10 << 30}
	ended := c.etcdStarting()
	if got := gcPercent(); got != startingGOGC {
		t.Fatalf("GOGC while etcd starts: %d, want %d", got, startingGOGC)
	}
	if got := debug.SetMemoryLimit(-1); got != 9<<30 {
		t.Fatalf("memory limit while etcd starts under a 10 GiB cgroup: %d, want 9 GiB", got)
	}
	second := c.etcdStarting()
	ended()
	ended() // once only
	if got := gcPercent(); got != startingGOGC {
		t.Fatalf("GOGC while a second start runs: %d, want %d", got, startingGOGC)
	}
	second()
	if got := gcPercent(); got != before {
		t.Fatalf("GOGC after the starts: %d, want %d", got, before)
	}
	if got := debug.SetMemoryLimit(-1); got != beforeLimit {
		t.Fatalf("memory limit after the starts: %d, want %d", got, beforeLimit)
	}

	if !newGoCollector().disabled {
		t.Fatal("GOGC set in the environment, and the collector would change it")
	}
	debug.SetGCPercent(150)
	defer debug.SetGCPercent(before)
	newGoCollector().etcdStarting()()
	if got := gcPercent(); got != 150 {
		t.Fatalf("GOGC set by the user: %d, want 150 kept", got)
	}
}

func TestCgroupMemoryLimit(t *testing.T) {
	for name, tc := range map[string]struct {
		files map[string]string
		want  int64
	}{
		"v2, own cgroup": {map[string]string{"proc/self/cgroup": "0::/kubepods/pod1/c1\n",
			"sys/fs/cgroup/kubepods/pod1/c1/memory.max": "536870912\n"}, 512 << 20},
		"v2, namespaced (root)": {map[string]string{"proc/self/cgroup": "0::/\n",
			"sys/fs/cgroup/memory.max": "1073741824\n"}, 1 << 30},
		"v2, no limit": {map[string]string{"proc/self/cgroup": "0::/a\n", "sys/fs/cgroup/a/memory.max": "max\n"}, 0},
		"v1": {map[string]string{"proc/self/cgroup": "5:devices:/\n4:memory:/docker/abc\n0::/\n",
			"sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "268435456\n"}, 256 << 20},
		"v1, no limit": {map[string]string{"proc/self/cgroup": "4:memory:/x\n",
			"sys/fs/cgroup/memory/x/memory.limit_in_bytes": "9223372036854771712\n"}, 0},
		"v1, path not mounted, root read": {map[string]string{"proc/self/cgroup": "4:cpu,memory:/gone\n",
			"sys/fs/cgroup/memory/memory.limit_in_bytes": "134217728\n"}, 128 << 20},
		"no cgroup file":  {map[string]string{}, 0},
		"garbage":         {map[string]string{"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/memory.max": "lots\n"}, 0},
		"nothing to read": {map[string]string{"proc/self/cgroup": "0::/a\n"}, 0},
	} {
		t.Run(name, func(t *testing.T) {
			fsys := fstest.MapFS{}
			for p, data := range tc.files {
				fsys[p] = &fstest.MapFile{Data: []byte(data)}
			}
			if got := cgroupMemoryLimit(fsys); got != tc.want {
				t.Fatalf("limit %d, want %d", got, tc.want)
			}
		})
	}
}
