package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"filippo.io/age"

	"github.com/etcdbr/etcdbr/snapstore"
)

// StoreFlags are the flags every command that reads or writes a store shares.
type StoreFlags struct {
	Store           string `help:"Backup store URL: file:///dir, s3://bucket/prefix?region=..., gs://bucket/prefix, azblob://container/prefix (run: default a directory beside the data dir). The commands that read a store also read another tool's backups, detected or named by layout=: an etcd-backup-restore store, an etcdctl, k3s or rke2 snapshot file (docs/migrate.md)." env:"ETCDBR_STORE" type:"nonempty"`
	EncryptionFlags `embed:""`
}

// EncryptionFlags configure client-side encryption with age (https://age-encryption.org).
type EncryptionFlags struct {
	EncryptionRecipient      []string `help:"Encrypt new backups with age to this public key (age1...), or to the keys in this file, one per line. Repeatable: any matching identity decrypts." env:"ETCDBR_ENCRYPTION_RECIPIENT" placeholder:"KEY|FILE"`
	EncryptionIdentity       []string `help:"Decrypt encrypted backups with the age secret keys in this file (age-keygen's output). Repeatable. Only decrypts: new backups are encrypted only with --encryption-recipient or --encryption-passphrase-file." env:"ETCDBR_ENCRYPTION_IDENTITY" placeholder:"FILE"`
	EncryptionPassphraseFile string   `help:"Encrypt new backups, and decrypt backups, with the passphrase on the first line of this file (at least 16 bytes; a long random one). Not with --encryption-recipient." env:"ETCDBR_ENCRYPTION_PASSPHRASE_FILE" placeholder:"FILE"`
}

// options turns the encryption flags into the store's recipients and identities.
func (f EncryptionFlags) options() (snapstore.Options, error) {
	var opts snapstore.Options
	for _, arg := range f.EncryptionRecipient {
		rs, err := snapstore.LoadRecipients(arg)
		if err != nil {
			return opts, usageErrorf("--encryption-recipient %q: %v: give an age public key (age1..., "+
				"from age-keygen) or the path of a file of them", arg, err)
		}
		opts.Recipients = append(opts.Recipients, rs...)
	}
	for _, path := range f.EncryptionIdentity {
		ids, err := snapstore.LoadIdentities(path)
		if err != nil {
			return opts, usageErrorf("--encryption-identity %q: %v: give the file age-keygen wrote the secret key to", path, err)
		}
		opts.Identities = append(opts.Identities, ids...)
	}
	if f.EncryptionPassphraseFile != "" {
		if len(opts.Recipients) > 0 {
			return opts, usageErrorf("--encryption-passphrase-file and --encryption-recipient cannot be combined: " +
				"age encrypts to a passphrase alone; use one or the other (--encryption-identity can still " +
				"be given to read backups encrypted to a key)")
		}
		r, id, err := snapstore.LoadPassphrase(f.EncryptionPassphraseFile)
		if err != nil {
			return opts, usageErrorf("--encryption-passphrase-file %q: %v", f.EncryptionPassphraseFile, err)
		}
		opts.Recipients = []age.Recipient{r}
		opts.Identities = append(opts.Identities, id)
	}
	return opts, nil
}

// open opens the store named by the flags, for a command that writes backups into it (run,
// snapshot): a file store's directory is created when missing.
func (f StoreFlags) open(ctx context.Context) (*snapstore.Store, error) {
	if f.Store == "" {
		return nil, usageErrorf("--store is required (or ETCDBR_STORE): the URL of the backup store")
	}
	return f.openURL(ctx, "--store", f.Store, nil, false)
}

// writable refuses a store that holds another tool's backups (its URL says layout=...) for
// a command that writes into the store.
func writable(flag string, store *snapstore.Store) error {
	if !store.ReadOnly() {
		return nil
	}
	store.Close()
	return usageErrorf("%s %s holds %s backups, which etcdbr only reads: back up into an etcdbr store "+
		"(convert the old backups into it with etcdbr copy --from OLD --to NEW)", flag, store.URL(), store.Layout())
}

// openExisting opens the store named by the flags for a command that reads it (list,
// verify, restore, gc, validate): a store that does not exist, a missing directory or
// bucket, is a usage error that names it, and nothing is created.
func (f StoreFlags) openExisting(ctx context.Context, lg *slog.Logger) (*snapstore.Store, error) {
	if f.Store == "" {
		return nil, usageErrorf("--store is required (or ETCDBR_STORE): the URL of the backup store")
	}
	return f.openURL(ctx, "--store", f.Store, lg, true)
}

// openURL opens the store at url, named flag on the command line, with the encryption
// flags; a URL that cannot be opened is a usage error. With mustExist, a store that does
// not exist is one too (snapstore.ErrNoStore), and nothing is created.
func (f EncryptionFlags) openURL(ctx context.Context, flag, url string, lg *slog.Logger, mustExist bool) (*snapstore.Store, error) {
	opts, err := f.options()
	if err != nil {
		return nil, err
	}
	opts.Log = lg
	opts.MustExist = mustExist
	store, err := snapstore.Open(ctx, url, opts)
	if err != nil {
		return nil, usageError{fmt.Errorf("%s: %w", flag, err)}
	}
	if mustExist {
		// A missing bucket is told from an empty store here; any other failure to reach
		// the store is left to the reads that follow, which retry.
		if err := store.Check(ctx); errors.Is(err, snapstore.ErrNoStore) {
			store.Close()
			return nil, usageError{fmt.Errorf("%s: %w", flag, err)}
		} else if err == nil {
			// A store that answers is read in the layout it holds: etcdbr's, or another
			// tool's (etcd-backup-restore, a snapshot file), unless its URL says which.
			if _, err := store.Detect(ctx); err != nil {
				store.Close()
				return nil, fmt.Errorf("%s: %w", flag, err)
			}
		}
		return store, nil
	}
	if err := writable(flag, store); err != nil {
		return nil, err
	}
	return store, nil
}

// defaultStoreURL is the local store beside a data dir, used when run has no --store.
func defaultStoreURL(lg *slog.Logger, dataDir string) string {
	url := "file://" + filepath.Clean(dataDir) + ".backups"
	lg.Warn("no --store given: backups go to a local directory beside the data dir; "+
		"they protect against corruption but not against losing the disk: set --store to object storage", "store", url)
	return url
}
