package snapstore

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	"filippo.io/age"
)

// Passphrase encryption settings. age's scrypt costs 2^workFactor * 1 KiB
// of memory and proportional time on every object written and read: at
// age's default of 18 that is 256 MiB and half a second per object, too
// much for a delta every few seconds. 15 costs 32 MiB and about 50 ms; it
// is meant for long random passphrases (MinPassphraseLength), which no
// work factor needs to make up for.
const (
	passphraseWorkFactor    = 15
	passphraseMaxWorkFactor = 18 // age's default: objects encrypted by `age -p` read back
	// MinPassphraseLength is the shortest passphrase LoadPassphrase accepts.
	MinPassphraseLength = 16
)

// LoadRecipients parses arg as an age recipient: a public key (age1..., also
// the post-quantum age1pq1...), or else the path of a recipients file with
// one public key per line (# comments and blank lines ignored).
func LoadRecipients(arg string) ([]age.Recipient, error) {
	if strings.HasPrefix(arg, "age1") {
		rs, err := age.ParseRecipients(strings.NewReader(arg))
		if err != nil {
			return nil, fmt.Errorf("not a valid age public key: %w", err)
		}
		return rs, nil
	}
	data, err := os.ReadFile(arg)
	if err != nil {
		return nil, fmt.Errorf("neither an age public key (age1...) nor a readable recipients file: %w", err)
	}
	rs, err := age.ParseRecipients(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("recipients file %s: %w (one age public key per line is expected; "+
			"SSH keys and plugins are not supported)", arg, err)
	}
	return rs, nil
}

// LoadIdentities reads an age identity file: one secret key
// (AGE-SECRET-KEY-1..., as age-keygen writes) per line, # comments and
// blank lines ignored.
func LoadIdentities(path string) ([]age.Identity, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if bytes.HasPrefix(data, []byte("age-encryption.org/")) {
		return nil, fmt.Errorf("identity file %s is itself encrypted with age: decrypt it first (etcdbr cannot prompt for its passphrase)", path)
	}
	ids, err := age.ParseIdentities(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("identity file %s: %w (age-keygen's output, AGE-SECRET-KEY-1... lines, is expected)", path, err)
	}
	return ids, nil
}

// LoadPassphrase reads a passphrase from the first line of a file and
// returns the age recipient that encrypts with it and the identity that
// decrypts with it (scrypt). The passphrase must be at least
// MinPassphraseLength bytes long.
func LoadPassphrase(path string) (age.Recipient, age.Identity, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	pass := strings.TrimSuffix(line, "\r")
	if len(pass) < MinPassphraseLength {
		return nil, nil, fmt.Errorf("the passphrase in %s is %d bytes long, shorter than %d: use a long random one, "+
			"e.g. `head -c 32 /dev/urandom | base64 > %s`", path, len(pass), MinPassphraseLength, path)
	}
	r, err := age.NewScryptRecipient(pass)
	if err != nil {
		return nil, nil, err
	}
	r.SetWorkFactor(passphraseWorkFactor)
	id, err := age.NewScryptIdentity(pass)
	if err != nil {
		return nil, nil, err
	}
	id.SetMaxWorkFactor(passphraseMaxWorkFactor)
	return r, id, nil
}
