package main

import (
	"context"
	"fmt"
	"time"

	"github.com/etcdbr/etcdbr/internal/progress"
	"github.com/etcdbr/etcdbr/snapstore"
)

// CopyCmd is `etcdbr copy`: copies backups from one store to another, verified.
type CopyCmd struct {
	From            string `help:"The store to copy from (a store URL, as --store)." required:"" env:"ETCDBR_COPY_FROM"`
	To              string `help:"The store to copy to; its bucket must exist." required:"" env:"ETCDBR_COPY_TO"`
	Since           string `help:"Copy only what restoring to any point from then on needs: the newest full snapshot taken at or before it, and everything after it. A time (RFC 3339, 2026-11-25T10:00:00Z) or a duration back from now (24h)." env:"ETCDBR_COPY_SINCE"`
	DryRun          bool   `help:"Print what would be copied; copy nothing." env:"ETCDBR_COPY_DRY_RUN"`
	EncryptionFlags `embed:""`
}

// Help explains how the encryption flags apply to a copy.
func (c *CopyCmd) Help() string {
	return "Objects the destination already has (same kind, revisions and time) are skipped, so an " +
		"interrupted copy can simply run again. Each copy is read back from the destination and verified.\n\n" +
		"Without --encryption-recipient, objects are copied byte for byte, encrypted ones included (no key " +
		"needed); --encryption-identity lets the copies of encrypted objects be decrypted and checked too. " +
		"With --encryption-recipient (or --encryption-passphrase-file), every object is decrypted, checked and " +
		"encrypted again to the new recipients (key rotation, or encrypting a plain store); then " +
		"--encryption-identity must hold the keys of the objects to copy and one of the new ones."
}

// Run copies.
func (c *CopyCmd) Run(ctx context.Context, env *Env) error {
	since, err := parseSince(c.Since, time.Now())
	if err != nil {
		return err
	}
	if c.From == c.To {
		return usageErrorf("--from and --to are the same store %q", c.From)
	}
	src, err := c.openURL(ctx, "--from", c.From, env.Log, true)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := c.openURL(ctx, "--to", c.To, env.Log, false)
	if err != nil {
		return err
	}
	defer dst.Close()
	if err := dst.Check(ctx); err != nil {
		return fmt.Errorf("--to: %w", err)
	}
	sel, err := snapstore.SelectBackupCopies(ctx, src, dst, since)
	if err != nil {
		return err
	}
	if c.DryRun {
		for _, snap := range sel.ToCopy {
			fmt.Fprintf(env.Stdout, "would copy %s (%d bytes)\n", snap.Key, snap.Size)
		}
		fmt.Fprintf(env.Stdout, "would copy %d objects; %d are in the destination already\n", len(sel.ToCopy), len(sel.Skipped))
		return nil
	}
	var copied, bytes, failed int64
	p := progress.New("copy")
	stop := watchProgress(ctx, env, p)
	defer stop()
	_, err = snapstore.CopyBackups(ctx, src, dst, sel, p, func(o snapstore.CopiedObject) {
		if o.Err != nil {
			env.Log.Error("copy failed", "object", o.Snapshot.Key, "err", o.Err)
			fmt.Fprintf(env.Stdout, "FAILED %s: %v\n", o.Snapshot.Key, o.Err)
			failed++
			return
		}
		copied++
		bytes += o.Result.Copy.Size
		how := "verified"
		switch {
		case o.Result.Converted:
			how = "converted from " + string(src.Layout()) + ", verified"
		case o.Result.Reencrypted:
			how = "re-encrypted, verified"
		case !o.Result.PayloadVerified:
			how = "encrypted, verified byte for byte (no identity to decrypt it)"
		}
		fmt.Fprintf(env.Stdout, "copied %s (%d bytes, %s)\n", o.Result.Copy.Key, o.Result.Copy.Size, how)
	})
	stop()
	if ctx.Err() != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "copied %d objects (%d bytes); %d were in the destination already; %d failed\n",
		copied, bytes, len(sel.Skipped), failed)
	return err
}

// parseSince parses --since: an RFC 3339 time, or a duration back from now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, usageErrorf("--since %q: give a time (RFC 3339, e.g. 2026-11-25T10:00:00Z) or a positive duration back from now (e.g. 24h)", s)
	}
	return now.Add(-d), nil
}
