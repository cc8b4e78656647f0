package embeddedtest

import (
	"net"
	"strconv"
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
