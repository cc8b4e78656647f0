package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// writeFile writes content to a new file in dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

func TestEncryptionFlags(t *testing.T) {
	dir := t.TempDir()
	a, err := age.GenerateX25519Identity()
	require.NoError(t, err)
	b, err := age.GenerateX25519Identity()
	require.NoError(t, err)
	recipients := writeFile(t, dir, "recipients.txt", "# team keys\n"+a.Recipient().String()+"\n\n"+b.Recipient().String()+"\n")
	identity := writeFile(t, dir, "key.txt", "# created: now\n"+a.String()+"\n")
	passphrase := writeFile(t, dir, "pass", "a-long-random-passphrase-0123456789\n")

	t.Run("keys and files", func(t *testing.T) {
		opts, err := EncryptionFlags{
			EncryptionRecipient: []string{b.Recipient().String(), recipients},
			EncryptionIdentity:  []string{identity},
		}.options()
		require.NoError(t, err)
		assert.Len(t, opts.Recipients, 3)
		require.Len(t, opts.Identities, 1)
		assert.Equal(t, a.String(), opts.Identities[0].(*age.X25519Identity).String())
	})
	t.Run("passphrase", func(t *testing.T) {
		opts, err := EncryptionFlags{EncryptionPassphraseFile: passphrase, EncryptionIdentity: []string{identity}}.options()
		require.NoError(t, err)
		require.Len(t, opts.Recipients, 1)
		assert.IsType(t, &age.ScryptRecipient{}, opts.Recipients[0])
		assert.Len(t, opts.Identities, 2, "the passphrase decrypts too, beside the identity file")
	})
	for _, tc := range []struct {
		name  string
		flags EncryptionFlags
		want  []string // substrings of the error
	}{
		{"not a key", EncryptionFlags{EncryptionRecipient: []string{"age1notakey"}}, []string{"--encryption-recipient \"age1notakey\"", "not a valid age public key"}},
		{"no such file", EncryptionFlags{EncryptionRecipient: []string{filepath.Join(dir, "missing")}}, []string{"--encryption-recipient", "neither an age public key", "age-keygen"}},
		{"bad recipients file", EncryptionFlags{EncryptionRecipient: []string{identity}}, []string{"--encryption-recipient", "recipients file"}},
		{"identity missing", EncryptionFlags{EncryptionIdentity: []string{filepath.Join(dir, "missing")}}, []string{"--encryption-identity", "no such file"}},
		{"identity file of public keys", EncryptionFlags{EncryptionIdentity: []string{recipients}}, []string{"--encryption-identity", "AGE-SECRET-KEY-1"}},
		{"short passphrase", EncryptionFlags{EncryptionPassphraseFile: writeFile(t, dir, "short", "hunter2\n")}, []string{"--encryption-passphrase-file", "shorter than 16", "/dev/urandom"}},
		{"passphrase and recipient", EncryptionFlags{EncryptionPassphraseFile: passphrase, EncryptionRecipient: []string{a.Recipient().String()}}, []string{"cannot be combined"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.flags.options()
			require.Error(t, err)
			var ue usageError
			assert.ErrorAs(t, err, &ue, "a usage error (exit 2)")
			for _, want := range tc.want {
				assert.Contains(t, err.Error(), want)
			}
		})
	}

	t.Run("command line", func(t *testing.T) {
		var out, errOut strings.Builder
		code := run([]string{"etcdbr", "list", "--store", "file://" + filepath.Join(dir, "store"), "--encryption-recipient", "bogus"}, &out, &errOut)
		assert.Equal(t, exitUsage, code)
		assert.Contains(t, errOut.String(), "--encryption-recipient \"bogus\"")
	})
}

// TestWritableStore: a command that writes into its store refuses a URL that names another
// tool's store (a usage error that says how to move its backups), and creates nothing there;
// a command that reads opens it.
func TestWritableStore(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	url := "file://" + dir + "?layout=etcd-backup-restore"
	_, err := StoreFlags{Store: url}.open(ctx)
	var usage usageError
	require.ErrorAs(t, err, &usage)
	assert.Contains(t, err.Error(), "holds etcd-backup-restore backups, which etcdbr only reads")
	assert.Contains(t, err.Error(), "etcdbr copy --from OLD --to NEW")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries)

	s, err := StoreFlags{Store: url}.openExisting(ctx, nil)
	require.NoError(t, err)
	defer s.Close()
	assert.True(t, s.ReadOnly())
}
