package snapstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/internal/storetest"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// TestS3UploadStalledSend: a connection that stops being read in the middle of an upload's
// part (a store or a middlebox holding the request: the TCP window stays full, which TCP
// never times out) is given up after Options.SendTimeout and the part sent again; the
// object is whole. Without the send timeout the upload waits for as long as the stall lasts
// (here until the test's context ends, and the upload fails).
func TestS3UploadStalledSend(t *testing.T) {
	server := s3TestServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	bucket := storetest.NewBucketName()
	require.NoError(t, server.CreateBucket(ctx, bucket))
	target, err := url.Parse(server.Endpoint)
	require.NoError(t, err)
	proxy := startStallingProxy(t, target.Host)
	s, err := Open(ctx, storetest.Service{Kind: storetest.S3, Endpoint: "http://" + proxy.addr()}.URL(bucket, "x"),
		Options{SendTimeout: time.Second})
	require.NoError(t, err)
	defer s.Close()

	payload := randomBytes(3*uploadPartSize, 11) // incompressible: three parts and a bit
	w, err := s.Create(ctx, catalog.Snapshot{Kind: catalog.KindFull, Revision: 9, Time: testTime})
	require.NoError(t, err)
	defer w.Abort()
	_, err = io.Copy(w, bytes.NewReader(payload))
	require.NoError(t, err)
	snap, err := w.Commit()
	require.NoError(t, err, "the upload through a connection that stopped being read")
	require.True(t, proxy.didStall(), "no request for a part came: nothing stalled")

	got, err := readObject(s, snap)
	require.NoError(t, err)
	require.True(t, bytes.Equal(payload, got), "the object read back differs from what was written")
}

// stallingProxy forwards TCP connections to a server; the first request for a part of a
// multipart upload is not forwarded, and its connection stops being read there, until the
// test ends: the store never hears of it, as with a middlebox that holds it. Its listening
// socket's receive buffer is small, so that what the proxy does not read stays in the
// client.
type stallingProxy struct {
	ln   net.Listener
	done chan struct{} // closed at the test's end: ends the stall

	mu      sync.Mutex // guards stalled and conns
	stalled bool       // a connection stalled
	conns   []net.Conn
}

func startStallingProxy(t *testing.T, target string) *stallingProxy {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return errors.Join(err, serr)
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &stallingProxy{ln: ln, done: make(chan struct{})}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(p.done)
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			var held atomic.Bool // the client's connection stalled: only the test's end closes it
			wg.Go(func() {
				_, _ = io.Copy(c, up)
				if !held.Load() {
					c.Close()
				}
			})
			wg.Go(func() { p.forward(c, up, &held) })
		}
	})
	return p
}

// forward copies what client sends to server, but for the first request for an upload's
// part (PUT ...?partNumber=): it stops reading client there, for good. A request's line is at
// the start of what a read returns: HTTP/1.1 sends a request once the answer to the one
// before came.
func (p *stallingProxy) forward(client, server net.Conn, held *atomic.Bool) {
	defer server.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := client.Read(buf)
		if n > 0 {
			line, _, _ := bytes.Cut(buf[:n], []byte("\r\n"))
			if bytes.HasPrefix(line, []byte("PUT ")) && bytes.Contains(line, []byte("partNumber=")) && p.stall() {
				held.Store(true)
				server.Close() // the store never hears of it, nor closes the client's connection
				<-p.done
				return
			}
			if _, werr := server.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// stall reports whether the calling connection is the one to stall (the first to ask).
func (p *stallingProxy) stall() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stalled {
		return false
	}
	p.stalled = true
	return true
}

// didStall reports whether a connection stalled.
func (p *stallingProxy) didStall() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stalled
}

func (p *stallingProxy) addr() string { return p.ln.Addr().String() }
