package testsuite

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdbr/etcdbr/embedded/datadir"
)

// ackLog is what the writers of a load were told: per key, the last value whose put was
// acknowledged and the values put after it without an answer (in flight at a SIGKILL,
// or failed), which the member may or may not hold.
type ackLog struct {
	mu    sync.Mutex
	keys  map[string]*keyAcks
	acked atomic.Int64
}

type keyAcks struct {
	acked string   // "" while no put of the key was acknowledged
	after []string // values put after the acknowledged one, not acknowledged
}

func newAckLog() *ackLog { return &ackLog{keys: map[string]*keyAcks{}} }

func (l *ackLog) entry(key string) *keyAcks {
	k := l.keys[key]
	if k == nil {
		k = &keyAcks{}
		l.keys[key] = k
	}
	return k
}

// attempt records a put about to be sent.
func (l *ackLog) attempt(key, value string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.entry(key)
	k.after = append(k.after, value)
}

// ack records that the put of value was acknowledged: it supersedes every earlier put of
// the key (one writer owns a key and waits for each put's answer).
func (l *ackLog) ack(key, value string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.entry(key)
	k.acked, k.after = value, nil
	l.acked.Add(1)
}

// check compares the member's keys under prefix with the log: every acknowledged value is
// there, or a value put after it; no other key is there. What the member holds becomes the
// acknowledged state (a restarted single member commits its whole log before it answers a
// linearizable read, so that state is final).
func (l *ackLog) check(t *testing.T, cli *clientv3.Client, prefix string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	got := make(map[string]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		got[string(kv.Key)] = string(kv.Value)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var problems []string
	for key, k := range l.keys {
		v, ok := got[key]
		switch {
		case !ok && k.acked != "":
			problems = append(problems, fmt.Sprintf("%s: missing, the put of %q was acknowledged", key, k.acked))
		case ok && v != k.acked && !contains(k.after, v):
			problems = append(problems, fmt.Sprintf("%s: holds %q, the acknowledged put was %q (then %v without an answer)", key, v, k.acked, k.after))
		}
		if ok {
			k.acked, k.after = v, nil
		} else {
			k.after = nil
		}
	}
	for key := range got {
		if _, ok := l.keys[key]; !ok {
			problems = append(problems, fmt.Sprintf("%s: holds %q, never written", key, got[key]))
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		t.Fatalf("%d of %d keys differ from what the writers were told:\n%s", len(problems), len(l.keys), strings.Join(problems[:min(len(problems), 20)], "\n"))
	}
}

// load is a set of clients, each putting its own keys one after the other as fast as the
// member answers.
type load struct {
	cancel context.CancelFunc
	done   sync.WaitGroup
}

func startLoad(t *testing.T, endpoint string, clients, round int, log *ackLog) *load {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel}
	for w := range clients {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		l.done.Go(func() {
			defer cli.Close()
			for i := 0; ctx.Err() == nil; i++ {
				key, value := fmt.Sprintf("/load/w%d/%03d", w, i%150), fmt.Sprintf("round %d writer %d put %d", round, w, i)
				log.attempt(key, value)
				pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := cli.Put(pctx, key, value)
				pcancel()
				if err == nil {
					log.ack(key, value)
				}
			}
		})
	}
	return l
}

// inFlight counts the keys with a put that got no answer after the last acknowledged one.
func (l *ackLog) inFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, k := range l.keys {
		if len(k.after) > 0 {
			n++
		}
	}
	return n
}

// halt stops the writers; a put in flight ends without an acknowledgement.
func (l *load) halt() {
	l.cancel()
	l.done.Wait()
}

// TestValidateAfterSIGKILLUnderLoad kills `etcdbr run` with SIGKILL while four clients write
// as fast as the member answers, five times on the same data dir, at different points of
// the load (etcd takes a raft snapshot every 500 entries, so some kills land near one).
// After each kill `etcdbr validate --validation full` says valid, never corrupt or could
// not tell, and the next `etcdbr run` keeps the data dir (nothing is moved aside or
// restored from the store, whose only full snapshot is from before the writes) and serves
// every acknowledged put with its value.
func TestValidateAfterSIGKILLUnderLoad(t *testing.T) {
	dir := t.TempDir()
	m := newMember(t, dir)
	store := "file://" + filepath.Join(dir, "store")
	args := append(m.runArgs(store, "--full-snapshot-schedule", "@every 1000h", "--delta-snapshot-period", "0"), "--snapshot-count=500")
	log := newAckLog()

	// How many puts each round has acknowledged before its kill: the kills land at
	// different points of the load and of the raft snapshot cycle.
	killAfter := []int64{300, 800, 600, 1200, 650}
	for round, n := range killAfter {
		p := start(t, args)
		cli := client(t, m.ClientURL)
		if round == 0 {
			// The store's one full snapshot, of the empty member, before any write: no
			// start has a reason to restore it.
			waitFull(t, store, 1, time.Minute)
		}
		log.check(t, cli, "/load/")
		target := log.acked.Load() + n
		w := startLoad(t, m.ClientURL, 4, round, log)
		deadline := time.Now().Add(2 * time.Minute)
		for log.acked.Load() < target {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: %d puts acknowledged after 2 minutes, want %d", round, log.acked.Load(), target)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err := p.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		p.wait(time.Minute)
		w.halt()
		if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: etcdbr run ended with %v, not by SIGKILL", round, p.cmd.ProcessState)
		}
		cli.Close()
		snaps, _ := filepath.Glob(filepath.Join(m.DataDir, "member", "snap", "*.snap"))
		t.Logf("round %d: killed after %d acknowledged puts, %d puts without an answer, %d raft snapshot files",
			round, log.acked.Load(), log.inFlight(), len(snaps))

		code, out := validate(t, m.DataDir, "--validation", "full")
		if code != 0 || !strings.Contains(out, "verdict: valid") {
			t.Fatalf("round %d: after SIGKILL under load the full validation says (exit %d):\n%s", round, code, out)
		}
	}

	p := start(t, args)
	cli := client(t, m.ClientURL)
	log.check(t, cli, "/load/")
	cli.Close()
	p.stop()
	if olds, err := datadir.OldDataDirs(m.DataDir); err != nil || len(olds) > 0 {
		t.Fatalf("data dirs moved aside (%v, %v): a start restored over a valid data dir", olds, err)
	}
	if n := len(fulls(t, store)); n != 1 {
		t.Fatalf("the store holds %d full snapshots, want the one of the first start", n)
	}
}
