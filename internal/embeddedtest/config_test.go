package embeddedtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// FreePort picks ports below the kernel's ephemeral range, that can be bound.
func TestFreePort(t *testing.T) {
	for range 20 {
		port := FreePort(t)
		if port < freePortMin || port > freePortMax {
			t.Fatalf("port %d is outside %d-%d", port, freePortMin, freePortMax)
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			t.Fatalf("port %d cannot be bound: %v", port, err)
		}
		l.Close()
	}
}

// Within a process, a port is not handed out twice until the whole block went round.
func TestFreePortNotRepeated(t *testing.T) {
	seen := map[int]bool{}
	for range 100 {
		port := FreePort(t)
		if seen[port] {
			t.Fatalf("port %d was handed out twice in 100 calls", port)
		}
		seen[port] = true
	}
}

// Two test processes hold different blocks: a second process (this test binary run again)
// gets no port from this process's block.
func TestFreePortBlocksPerProcess(t *testing.T) {
	if os.Getenv("ETCDBR_PORT_CHILD") != "" {
		fmt.Println("port", FreePort(t))
		return
	}
	mine := FreePort(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestFreePortBlocksPerProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "ETCDBR_PORT_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var theirs int
	for _, line := range strings.Split(string(out), "\n") {
		if n, ok := strings.CutPrefix(line, "port "); ok {
			theirs, _ = strconv.Atoi(n)
		}
	}
	if theirs == 0 {
		t.Fatalf("the child printed no port:\n%s", out)
	}
	if block := (mine - freePortMin) / freePortBlock; (theirs-freePortMin)/freePortBlock == block {
		t.Fatalf("this process got %d and another got %d: both from block %d", mine, theirs, block)
	}
}
