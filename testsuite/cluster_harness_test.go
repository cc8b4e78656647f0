package testsuite

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// cluster is n `etcdbr run` members on loopback that form one etcd cluster and share one
// store. Member i is members[i]; procs[i] is its running process (nil while it is down).
// The harness only starts, stops, kills and inspects processes; what etcdbr does is the
// test's to check.
type cluster struct {
	t       testing.TB
	store   string
	extra   []string // etcdbr flags given to every member (before "--")
	members []member
	apis    []string // each member's --listen-api address (host:port)
	procs   []*proc
	// advertised is each member's peer URL as its peers reach it, when it differs from the
	// URL it listens on (a proxy in between: proxyPeers); nil: the same.
	advertised []string
	proxies    []*peerProxy // set by proxyPeers
}

// newCluster places n members under t.TempDir() (names m0..m<n-1>, each on its own ports);
// nothing runs yet.
func newCluster(t testing.TB, n int, store string, extra ...string) *cluster {
	t.Helper()
	c := &cluster{t: t, store: store, extra: extra, procs: make([]*proc, n)}
	for i := range n {
		m := newMember(t, t.TempDir())
		m.Name = fmt.Sprintf("m%d", i)
		c.members = append(c.members, m)
		c.apis = append(c.apis, fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	}
	return c
}

// initialCluster is etcd's --initial-cluster for every member.
func (c *cluster) initialCluster() string {
	var parts []string
	for i, m := range c.members {
		parts = append(parts, m.Name+"="+c.peerURL(i))
	}
	return strings.Join(parts, ",")
}

// peerURL is member i's peer URL as its peers reach it (its advertised peer URL).
func (c *cluster) peerURL(i int) string {
	if c.advertised != nil {
		return c.advertised[i]
	}
	return c.members[i].PeerURL
}

// args is `etcdbr run` for member i with etcd's --initial-cluster-state state ("new" or
// "existing") and extra etcdbr flags after the cluster's own.
func (c *cluster) args(i int, state string, extra ...string) []string {
	m := c.members[i]
	args := append([]string{"run", "--data-dir", m.DataDir, "--store", c.store, "--listen-api", c.apis[i],
		"--cluster-endpoints", c.clientURLs()}, c.extra...)
	args = append(append(args, extra...), "--")
	for _, f := range m.etcdFlags() {
		switch {
		case strings.HasPrefix(f, "--initial-cluster="):
		case strings.HasPrefix(f, "--initial-advertise-peer-urls="):
			args = append(args, "--initial-advertise-peer-urls="+c.peerURL(i))
		default:
			args = append(args, f)
		}
	}
	return append(args, "--initial-cluster="+c.initialCluster(), "--initial-cluster-state="+state,
		"--initial-cluster-token=etcdbr-test-"+filepath.Base(filepath.Dir(c.members[0].DataDir)))
}

// clientURLs is --cluster-endpoints: every member's client URL (the harness's ports are not
// etcd's 2379 and 2380, from which etcdbr would tell them).
func (c *cluster) clientURLs() string {
	var urls []string
	for _, m := range c.members {
		urls = append(urls, m.ClientURL)
	}
	return strings.Join(urls, ",")
}

// start runs member i with args (from c.args) and remembers its process.
func (c *cluster) start(i int, args []string) *proc {
	c.t.Helper()
	if p := c.procs[i]; p != nil {
		select {
		case <-p.done:
		default:
			c.t.Fatalf("member %s is still running", c.members[i].Name)
		}
	}
	c.procs[i] = start(c.t, args)
	return c.procs[i]
}

// startAll starts every member as a new cluster and waits until each serves.
func (c *cluster) startAll() {
	c.t.Helper()
	for i := range c.members {
		c.start(i, c.args(i, "new"))
	}
	for i := range c.members {
		c.client(i)
	}
}

// kill sends SIGKILL to member i and waits for it to be gone.
func (c *cluster) kill(i int) {
	c.t.Helper()
	p := c.procs[i]
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		c.t.Fatalf("kill member %s: %v", c.members[i].Name, err)
	}
	p.wait(30 * time.Second)
}

// wipe removes member i's data dir (the member must be down): a lost disk.
func (c *cluster) wipe(i int) {
	c.t.Helper()
	if err := os.RemoveAll(c.members[i].DataDir); err != nil {
		c.t.Fatal(err)
	}
}

// client is a client of member i alone, once it serves.
func (c *cluster) client(i int) *clientv3.Client {
	c.t.Helper()
	return client(c.t, c.members[i].ClientURL)
}

// clientAll is a client that may use any member.
func (c *cluster) clientAll() *clientv3.Client {
	c.t.Helper()
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.ClientURL)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cli.Close() })
	return cli
}

// memberStatus asks member i alone for its status.
func (c *cluster) memberStatus(i int) (*clientv3.StatusResponse, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.members[i].ClientURL}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return cli.Status(ctx, c.members[i].ClientURL)
}

// leader waits until the running members agree on a leader and returns its index.
func (c *cluster) leader(timeout time.Duration) int {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		leader, agreed := uint64(0), true
		index := -1
		for i, p := range c.procs {
			if p == nil || p.cmd.ProcessState != nil {
				continue
			}
			st, err := c.memberStatus(i)
			if err != nil || st.Leader == 0 || (leader != 0 && st.Leader != leader) {
				agreed = false
				break
			}
			leader = st.Leader
			if st.Header.MemberId == st.Leader {
				index = i
			}
		}
		if agreed && index >= 0 {
			return index
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the members agree on no running leader after %v", timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// hashKV is member i's HashKV at rev (0: its newest), with the revision it hashed.
func (c *cluster) hashKV(i int, rev int64) (hash uint32, at int64, err error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.members[i].ClientURL}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return 0, 0, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.HashKV(ctx, c.members[i].ClientURL, rev)
	if err != nil {
		return 0, 0, fmt.Errorf("hash kv of member %s at %d: %w", c.members[i].Name, rev, err)
	}
	return resp.Hash, resp.Header.Revision, nil
}

// peerHost is member i's peer URL's host:port.
func (c *cluster) peerHost(i int) string {
	u, err := url.Parse(c.members[i].PeerURL)
	if err != nil {
		c.t.Fatal(err)
	}
	return u.Host
}
