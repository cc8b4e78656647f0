package main

import (
	"context"
	"fmt"

	"github.com/etcdbr/etcdbr/internal/progress"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
	"github.com/etcdbr/etcdbr/supervisor"
)

// VerifyCmd is `etcdbr verify`: proves that a store's backups restore.
type VerifyCmd struct {
	StoreFlags `embed:""`
	Deep       bool   `help:"Also restore the latest point into a temporary directory, start etcd on it and compare it with the backups." env:"ETCDBR_VERIFY_DEEP"`
	TempDir    string `help:"Where --deep restores (needs room for the db and what the deltas add to it; default the system temp dir)." env:"ETCDBR_VERIFY_TEMP_DIR" type:"path"`
}

// Help says what is checked.
func (c *VerifyCmd) Help() string {
	return "Reads every object in the store and checks it: decryption, compression checksums, length and " +
		"SHA-256 against its trailer, a full snapshot's db against etcd's SHA-256, a delta's records against " +
		"the revisions in its name. Checks that the deltas leave no gap and do not overlap, and that the latest " +
		"point can be restored from intact objects. With --deep, restores it as etcdbr restore does, starts etcd " +
		"on the result, and compares its revision and every key the deltas wrote with the deltas. " +
		"Exits 1 when anything is wrong (each problem is printed, naming the object), 0 otherwise."
}

// Run verifies.
func (c *VerifyCmd) Run(ctx context.Context, env *Env) error {
	store, err := c.openExisting(ctx, env.Log)
	if err != nil {
		return err
	}
	defer store.Close()
	p := progress.New("verify")
	stop := watchProgress(ctx, env, p)
	rep, err := supervisor.Verify(ctx, store, supervisor.VerifyOptions{
		Progress:     p,
		Deep:         c.Deep,
		TempDir:      c.TempDir,
		Log:          env.Log,
		RecordDamage: true, // so that etcdbr list and GET /v1/backups leave damaged objects out of the window
		Checked: func(snap catalog.Snapshot, problem error) {
			if problem == nil {
				env.Log.Debug("verified", "object", snap.Key, "bytes", snap.Size)
			}
		},
	})
	stop()
	if err != nil {
		return err
	}
	printReport(env, store.URL(), rep)
	if problems := rep.AllProblems(); len(problems) > 0 {
		return fmt.Errorf("verify %s: %d problem(s) found", store.URL(), len(problems))
	}
	return nil
}

func printReport(env *Env, url string, rep supervisor.VerifyReport) {
	w := env.Stdout
	fmt.Fprintf(w, "store %s: read %d full snapshots and %d deltas (%d bytes stored, %d decoded)\n",
		url, rep.Fulls, rep.Deltas, rep.StoredBytes, rep.PayloadBytes)
	if n := len(rep.Gone); n > 0 {
		fmt.Fprintf(w, "%d objects deleted while verifying (garbage collection ran meanwhile): not checked\n", n)
	}
	if l := rep.Latest; l.Full.Key != "" {
		fmt.Fprintf(w, "latest point: revision %d, from %s and %d deltas\n", l.Revision, l.Full.Key, len(l.Deltas))
	}
	if d := rep.Deep; d != nil {
		fmt.Fprintf(w, "deep: restored revision %d (%d keys) in %v; etcd serves revision %d; %d keys written by the deltas compared\n",
			d.Restore.Revision, d.Keys, d.Duration.Round(1e6), d.Revision, d.KeysChecked)
	}
	problems := rep.AllProblems()
	if len(problems) == 0 {
		fmt.Fprintln(w, "OK")
		return
	}
	fmt.Fprintf(w, "%d problem(s):\n", len(problems))
	for _, p := range problems {
		fmt.Fprintf(w, "  %s\n", p)
	}
}
