package embedded

import (
	"context"
	"crypto/tls"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/etcdbr/etcdbr/internal/embeddedtest"
)

// TestCloseEndsClientStreams: a client keeps a watch stream open and never cancels it. etcd's
// own Close waits for such a stream (in grpc.Server.GracefulStop, or in http.Server.Shutdown
// when gRPC is served over https) for its request timeout, 5 s + 2 election timeouts, and then
// cuts the connection. Close must end the stream itself while the client still holds it, with
// Unavailable so that clients reconnect, and still stop etcd completely: the write
// acknowledged before it is there after a restart.
//
// Nothing is timed. A stop that waits is told from one that does not by the status the client
// gets (when etcd's graceful wait runs out it cuts the connection: the client sees a transport
// error, not the server's "etcd is stopping"), and by Close returning within a deadline that
// etcd's graceful wait exceeds (the election timeout is raised to make that wait 25 s; a stop
// that does not wait takes milliseconds).
func TestCloseEndsClientStreams(t *testing.T) {
	t.Parallel()
	for _, secure := range []bool{false, true} {
		name := "http"
		if secure {
			name = "https"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := embeddedtest.NewConfig(t)
			// A single member elects itself within one election timeout of starting: 10 s
			// keeps the start short and makes etcd's graceful wait 25 s.
			cfg.ElectionMs = 10000
			const deadline = 15 * time.Second
			creds := insecure.NewCredentials()
			if secure {
				creds = useClientTLS(t, cfg)
			}

			ctx, cancel := context.WithTimeout(context.Background(), embeddedtest.StartTimeout)
			defer cancel()
			e, err := Start(ctx, cfg, embeddedtest.Logger(t))
			require.NoError(t, err)
			t.Cleanup(e.Close)
			require.Greater(t, e.Server().Cfg.ReqTimeout(), deadline+5*time.Second,
				"etcd's graceful wait must exceed the deadline")

			conn, err := grpc.NewClient(cfg.ListenClientUrls[0].Host, grpc.WithTransportCredentials(creds))
			require.NoError(t, err)
			defer conn.Close() // closed again below: the client stops reconnecting
			_, err = pb.NewKVClient(conn).Put(ctx, &pb.PutRequest{Key: []byte("acked"), Value: []byte("v")})
			require.NoError(t, err)

			// The stream's context is never cancelled and conn stays open until the test ends:
			// whatever ends the stream comes from the server.
			ws, err := pb.NewWatchClient(conn).Watch(context.Background())
			require.NoError(t, err)
			require.NoError(t, ws.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{
				CreateRequest: &pb.WatchCreateRequest{Key: []byte("watched")}}}))
			resp, err := ws.Recv()
			require.NoError(t, err)
			require.True(t, resp.Created, "the watch is created: the server's handler runs")
			ended := make(chan error, 1)
			go func() {
				for {
					if _, err := ws.Recv(); err != nil {
						ended <- err
						return
					}
				}
			}()
			select {
			case err := <-ended:
				t.Fatalf("the watch stream ended before Close: %v", err)
			default:
			}

			closed := make(chan struct{})
			go func() {
				e.Close()
				close(closed)
			}()
			select {
			case <-closed:
			case <-time.After(deadline):
				t.Fatalf("Close did not return within %v: it waits for the open watch stream", deadline)
			}
			select {
			case err = <-ended:
			case <-time.After(deadline):
				t.Fatalf("the watch stream is still open %v after Close returned", deadline)
			}
			st, _ := status.FromError(err)
			assert.Equal(t, codes.Unavailable, st.Code(), "clients reconnect on Unavailable: %v", err)
			assert.Equal(t, "etcd is stopping", st.Message(), "the server ended the stream, not a cut connection: %v", err)
			require.NoError(t, conn.Close())

			// Fully stopped: the server's loop ended, Err is closed, the db lock is free.
			select {
			case <-e.Server().StopNotify():
			default:
				t.Fatal("Close returned before the server stopped")
			}
			_, open := <-e.Err()
			assert.False(t, open, "Err is closed once etcd stopped")
			cfg.ElectionMs = 1000
			e2 := embeddedtest.MustStart(t, Start, cfg)
			got, err := e2.Client().Get(context.Background(), "acked")
			require.NoError(t, err)
			require.Len(t, got.Kvs, 1, "the write acknowledged before Close survives it")
			assert.Equal(t, "v", string(got.Kvs[0].Value))
		})
	}
}

// useClientTLS makes cfg serve clients over https with client certificates, as kubeadm's etcd
// does, and returns the credentials of a client.
func useClientTLS(t *testing.T, cfg *embed.Config) credentials.TransportCredentials {
	t.Helper()
	pki := embeddedtest.NewPKI(t)
	u := url.URL{Scheme: "https", Host: cfg.ListenClientUrls[0].Host}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{u}, []url.URL{u}
	cfg.ClientTLSInfo = transport.TLSInfo{CertFile: pki.ServerCert, KeyFile: pki.ServerKey,
		TrustedCAFile: pki.CA, ClientCertAuth: true}
	client := transport.TLSInfo{CertFile: pki.ClientCert, KeyFile: pki.ClientKey, TrustedCAFile: pki.CA}
	tc, err := client.ClientConfig()
	require.NoError(t, err)
	tc.MinVersion = tls.VersionTLS12
	return credentials.NewTLS(tc)
}

// TestClientCalls checks which calls clientCalls ends, and how.
func TestClientCalls(t *testing.T) {
	t.Parallel()
	c := newClientCalls()
	unary := func(method string) (ctx context.Context, result chan error) {
		started, result := make(chan context.Context), make(chan error, 1)
		go func() {
			_, err := c.unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: method},
				func(ctx context.Context, _ any) (any, error) {
					started <- ctx
					<-ctx.Done()
					return nil, errors.New("handler: " + ctx.Err().Error())
				})
			result <- err
		}()
		return <-started, result
	}

	// Cancelled by the client: the handler's own error, not errStopping.
	ctx, cancel := context.WithCancel(context.Background())
	ss := &fakeStream{ctx: ctx}
	streamDone := make(chan error, 1)
	go func() {
		streamDone <- c.stream(nil, ss, &grpc.StreamServerInfo{}, func(_ any, s grpc.ServerStream) error {
			<-s.Context().Done()
			return s.Context().Err()
		})
	}()
	cancel()
	require.ErrorIs(t, <-streamDone, context.Canceled)

	streamCtx := make(chan context.Context)
	go func() {
		streamDone <- c.stream(nil, &fakeStream{ctx: context.Background()}, &grpc.StreamServerInfo{},
			func(_ any, s grpc.ServerStream) error {
				streamCtx <- s.Context()
				<-s.Context().Done()
				return s.Context().Err()
			})
	}()
	<-streamCtx
	lockCtx, lockDone := unary("/v3lockpb.Lock/Lock")
	putCtx, _ := unary("/etcdserverpb.KV/Put")

	c.stop()
	assert.ErrorIs(t, <-streamDone, errStopping, "a stream is ended")
	assert.ErrorIs(t, <-lockDone, errStopping, "a call waiting for a lock is ended")
	assert.ErrorIs(t, context.Cause(lockCtx), errStopping)
	assert.NoError(t, putCtx.Err(), "other unary calls are left to finish")

	// After stop, streams and waiting calls are refused before their handler runs.
	err := c.stream(nil, &fakeStream{ctx: context.Background()}, &grpc.StreamServerInfo{},
		func(any, grpc.ServerStream) error { t.Error("a stream started after stop"); return nil })
	assert.ErrorIs(t, err, errStopping)
	_, err = c.unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/v3electionpb.Election/Campaign"},
		func(context.Context, any) (any, error) { t.Error("a campaign started after stop"); return nil, nil })
	assert.ErrorIs(t, err, errStopping)
	c.mu.Lock()
	assert.Empty(t, c.cancels, "ended calls are forgotten")
	c.mu.Unlock()
}

type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *fakeStream) Context() context.Context { return s.ctx }
