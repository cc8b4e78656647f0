package backup

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
)

// SnapshotDialOptions are gRPC dial options for a client that streams full snapshots. gRPC
// receives messages into buffers of a pool, and gathers a message that arrived in several
// buffers into one more (its proto codec takes that one from its default pool); its default
// pool clears a buffer's whole capacity each time it hands it out, and a snapshot stream's
// messages (32 KiB of db each, in 16 KiB HTTP/2 frames) land in its 1 MiB buffers: receiving
// a db cleared 32 times its size. Here both come from a pool that hands buffers out again
// without clearing them (gRPC and the codec write a whole message into a buffer before they
// read it). experimental.WithBufferPool and grpc.ForceCodecV2 are experimental in gRPC
// 1.83: check them when gRPC is upgraded (TestFullFromClientStreams receives through both).
func SnapshotDialOptions() []grpc.DialOption {
	pool := &recvPool{}
	return []grpc.DialOption{
		experimental.WithBufferPool(pool),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(recvCodec{proto: encoding.GetCodecV2(grpcproto.Name), pool: pool})),
	}
}

// recvCodec is gRPC's proto codec, except that a message received in several buffers is
// gathered into a buffer of pool.
type recvCodec struct {
	proto encoding.CodecV2
	pool  mem.BufferPool
}

func (c recvCodec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

func (c recvCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if len(data) <= 1 {
		return c.proto.Unmarshal(data, v) // nothing to gather
	}
	buf := data.MaterializeToBuffer(c.pool)
	defer buf.Free()
	return c.proto.Unmarshal(mem.BufferSlice{buf}, v)
}

func (c recvCodec) Name() string { return c.proto.Name() }

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
