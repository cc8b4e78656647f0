package testsuite

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// Three `etcdbr run` members form one cluster; only the leader's etcdbr takes backups, and
// the store's chain holds every write made through any member.
func TestClusterOfThreeLeaderBacksUp(t *testing.T) {
	t.Parallel()
	store := "file://" + t.TempDir() + "/store"
	c := newCluster(t, 3, store, "--delta-snapshot-period", "1s")
	c.startAll()
	leader := c.leader(time.Minute)

	cli := c.clientAll()
	var last int64
	for i := range 20 {
		resp, err := cli.Put(context.Background(), fmt.Sprintf("k%02d", i), "v")
		if err != nil {
			t.Fatal(err)
		}
		last = resp.Header.Revision
	}
	s := openStore(t, store)
	deadline := time.Now().Add(time.Minute)
	for {
		newest, err := s.Newest(context.Background())
		if err == nil && newest >= last {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store's newest revision is %d (%v) after a minute, want %d", newest, err, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for i, p := range c.procs {
		took := p.count("full snapshot taken") + p.count("delta taken")
		if i == leader && took == 0 {
			t.Errorf("leader %s logged no backup", c.members[i].Name)
		}
		if i != leader && took != 0 {
			t.Errorf("follower %s logged %d backups", c.members[i].Name, took)
		}
	}
}
