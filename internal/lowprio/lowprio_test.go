package lowprio

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// threadNice reads the nice value of thread tid of this process from /proc; ok is false
// once the thread is gone.
func threadNice(t *testing.T, tid int) (nice int, ok bool) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/stat", tid))
	if os.IsNotExist(err) {
		return 0, false
	}
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command (in parentheses, which may hold spaces): state is field
	// 3 of stat, nice field 19.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	n, err := strconv.Atoi(fields[19-3])
	if err != nil {
		t.Fatal(err)
	}
	return n, true
}

// The work runs on threads of nice 19, never on the main thread, and each of them ends
// with its work; the main thread keeps its priority (Go would run the first goroutine on
// the main thread while the test's goroutines wait, and a main thread locked by a goroutine
// that ends is parked for good).
func TestRunLowersOnlyItsThread(t *testing.T) {
	if !Supported {
		t.Skip("no thread priorities here")
	}
	pid := syscall.Getpid()
	mainNice, _ := threadNice(t, pid)
	var tids []int
	for range 20 {
		var tid, nice int
		Run(func() {
			tid = syscall.Gettid()
			nice, _ = threadNice(t, tid)
		})
		if tid == pid {
			t.Fatal("the work ran on the main thread")
		}
		if nice != Nice {
			t.Fatalf("the work ran at nice %d, want %d", nice, Nice)
		}
		tids = append(tids, tid)
	}
	if n, _ := threadNice(t, pid); n != mainNice {
		t.Fatalf("the main thread's nice went from %d to %d", mainNice, n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, tid := range tids {
		for {
			if _, alive := threadNice(t, tid); !alive {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("thread %d of low-priority work still exists after it ended", tid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
