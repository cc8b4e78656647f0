package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/supervisor"
)

// ValidateCmd is `etcdbr validate`: the verdict on a data dir, for scripts and init
// containers. Exit code 0: valid; 1: invalid (corrupt, missing, or with --store, a dir
// that start-up would not keep); 2: could not tell (or a usage error).
type ValidateCmd struct {
	StoreFlags `embed:""`
	DataDir    string   `help:"The data dir to validate." required:"" env:"ETCDBR_DATA_DIR" type:"path"`
	Validation string   `help:"How deeply: quick (trusts the marker of a clean stop; without one: could not tell), full (reads everything), auto (quick when a clean-stop marker matches, else full)." default:"auto" enum:"auto,quick,full" env:"ETCDBR_VALIDATION"`
	EtcdArgs   []string `arg:"" optional:"" name:"etcd-flags" help:"etcd flags (--wal-dir, --initial-cluster) after --."`
}

// errCannotTell is the error of a verdict that could not be reached (exit code 2).
var errCannotTell = errors.New("could not tell")

// Run validates. It never modifies the data dir or the store.
func (c *ValidateCmd) Run(ctx context.Context, env *Env) error {
	depth, err := datadir.ParseDepth(c.Validation)
	if err != nil {
		return usageError{err}
	}
	cfg, err := etcdConfig(env, c.EtcdArgs, c.DataDir)
	if err != nil {
		return err
	}
	v := datadir.InspectWith(ctx, cfg.Dir, cfg.WalDir, datadir.InspectOptions{Depth: depth})
	fmt.Fprintf(env.Stdout, "data dir: %s\nverdict: %s\ncheck: %s\n", cfg.Dir, v.State, v.Depth)
	if v.Revision > 0 {
		fmt.Fprintf(env.Stdout, "revision: %d\n", v.Revision)
	}
	if v.MaxRevision != v.Revision {
		// The db lags its WAL (a crash) or etcd rebuilds it from the WAL.
		fmt.Fprintf(env.Stdout, "revision after the WAL replay: at most %d\n", v.MaxRevision)
	}
	if v.Reason != "" {
		fmt.Fprintf(env.Stdout, "reason: %s\n", v.Reason)
	}
	if v.State == datadir.StateValid || v.State == datadir.StateCorrupt {
		if id, err := datadir.ReadIDs(cfg.Dir, cfg.WalDir); err == nil {
			fmt.Fprintf(env.Stdout, "cluster: %s\nmember: %s\n", id.ClusterID, id.MemberID)
		}
	}

	if c.Store == "" {
		switch v.State {
		case datadir.StateValid:
			return nil
		case datadir.StateUnknown:
			return usageError{fmt.Errorf("%w whether data dir %q is valid: %s", errCannotTell, cfg.Dir, v.Reason)}
		}
		return fmt.Errorf("data dir %q is %s: %s", cfg.Dir, v.State, v.Reason)
	}

	store, err := c.openExisting(ctx, nil)
	if err != nil {
		return usageError{fmt.Errorf("%w: %w", errCannotTell, err)}
	}
	defer store.Close()
	// What etcdbr run decides with, gathered as it does.
	survey, err := supervisor.SurveyStart(ctx, cfg, store, v, nil)
	if survey.StoreErr != nil {
		return usageError{fmt.Errorf("%w: %w", errCannotTell, survey.StoreErr)}
	}
	if err != nil {
		// As etcdbr run does: an exact copy of this store's data is never started with it.
		fmt.Fprintf(env.Stdout, "store: %s\nat start: stop: %v\n", c.Store, err)
		return err
	}
	facts := survey.Facts
	decision, reason := supervisor.DecideStart(facts)
	fmt.Fprintf(env.Stdout, "store: %s\nstore revision: %d\n", c.Store, facts.StoreNewest)
	if facts.StoreCluster != "" {
		fmt.Fprintf(env.Stdout, "store cluster: %s\n", facts.StoreCluster)
	}
	fmt.Fprintf(env.Stdout, "at start: %s: %s\n", decision, reason)
	// A new machine on the store of another cluster: run watches the owner's liveness record
	// before it decides; validate reads it once and says what it found.
	switch owner, ok, err := supervisor.LookAtOwner(ctx, store, facts, time.Now()); {
	case err != nil:
		fmt.Fprintf(env.Stdout, "store takeover: cannot tell: %v\n", err)
	case ok && owner.ReadAgainIn > 0:
		fmt.Fprintf(env.Stdout, "store takeover: etcdbr run watches the owner first: %s\n", owner.Reason)
	case ok:
		fmt.Fprintf(env.Stdout, "store takeover: no: %s\n", owner.Reason)
	}
	switch {
	case decision == supervisor.DecideKeep:
		return nil
	case v.State == datadir.StateUnknown:
		return usageError{fmt.Errorf("%w whether data dir %q is valid: %s", errCannotTell, cfg.Dir, v.Reason)}
	}
	return fmt.Errorf("data dir %q: %s", cfg.Dir, reason)
}
