package backup

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
)

// SnapshotDialOptions are gRPC dial options for a client that streams full snapshots: gRPC
// receives messages into buffers of its pool, and its default pool clears a buffer's whole
// capacity each time it hands it out; a snapshot stream's messages (32 KiB of db each) land
// in its 1 MiB buffers, so receiving a db clears 32 times its size. This pool hands buffers
// out again without clearing them (gRPC reads the message into the buffer before it uses it).
func SnapshotDialOptions() []grpc.DialOption {
	return []grpc.DialOption{experimental.WithBufferPool(&recvPool{})}
}

// recvPool is a gRPC buffer pool of buffers of a power of two capacity, up to 1<<maxPoolShift
// bytes, that are not cleared when reused.
type recvPool struct {
	pools [maxPoolShift + 1]sync.Pool
}

const maxPoolShift = 22 // 4 MiB

// Get returns a buffer of length n.
func (p *recvPool) Get(n int) *[]byte {
	shift := bits.Len(uint(max(n, 1) - 1)) // the smallest power of two >= n
	if shift > maxPoolShift {
		b := make([]byte, n)
		return &b
	}
	if v, ok := p.pools[shift].Get().(*[]byte); ok {
		*v = (*v)[:n]
		return v
	}
	b := make([]byte, n, 1<<shift)
	return &b
}

// Put returns a buffer Get returned.
func (p *recvPool) Put(b *[]byte) {
	c := cap(*b)
	if c == 0 || c&(c-1) != 0 || c > 1<<maxPoolShift {
		return
	}
	p.pools[bits.Len(uint(c))-1].Put(b)
}
