package supervisor

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// verifyKeyState is what the last event of a key in the deltas says about it. The value is kept
// as its SHA-256, so that memory grows with the number of keys the deltas touch, not with
// their values.
type verifyKeyState struct {
	deleted                     bool
	create, mod, version, lease int64
	value                       [sha256.Size]byte
}

// verifyLastEvents reads deltas (in order) up to revision upTo and returns the last event of every
// key they touch.
func verifyLastEvents(ctx context.Context, store *snapstore.Store, deltas []catalog.Snapshot, upTo int64) (map[string]verifyKeyState, error) {
	last := map[string]verifyKeyState{}
	for _, d := range deltas {
		if err := verifyReadEvents(ctx, store, d, upTo, last); err != nil {
			return nil, err
		}
	}
	return last, nil
}

func verifyReadEvents(ctx context.Context, store *snapstore.Store, d catalog.Snapshot, upTo int64, last map[string]verifyKeyState) error {
	r, err := store.Open(ctx, d)
	if err != nil {
		return err
	}
	defer r.Close()
	dec, err := snapstore.NewDeltaDecoder(r)
	if err != nil {
		return fmt.Errorf("%s: %w", d.Key, err)
	}
	for {
		_, rev, err := dec.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", d.Key, err)
		}
		if rev == nil {
			continue // a lease record
		}
		if rev.Revision > upTo {
			return nil
		}
		for _, ev := range rev.Events {
			kv := ev.Kv
			if ev.Type == mvccpb.DELETE {
				last[string(kv.Key)] = verifyKeyState{deleted: true, mod: kv.ModRevision}
				continue
			}
			last[string(kv.Key)] = verifyKeyState{
				create: kv.CreateRevision, mod: kv.ModRevision, version: kv.Version, lease: kv.Lease,
				value: sha256.Sum256(kv.Value),
			}
		}
	}
}

// compare returns how the key-values a Get of the key returned differ from the state, or "".
func (want verifyKeyState) compare(got []*mvccpb.KeyValue) string {
	switch {
	case want.deleted && len(got) == 0:
		return ""
	case want.deleted:
		return fmt.Sprintf("present (mod revision %d), but deleted at revision %d", got[0].ModRevision, want.mod)
	case len(got) == 0:
		return fmt.Sprintf("absent, but put at revision %d", want.mod)
	}
	kv := got[0]
	if kv.CreateRevision != want.create || kv.ModRevision != want.mod || kv.Version != want.version || kv.Lease != want.lease {
		return fmt.Sprintf("create/mod revision, version, lease %d/%d/%d/%x, the deltas say %d/%d/%d/%x",
			kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease, want.create, want.mod, want.version, want.lease)
	}
	if sha256.Sum256(kv.Value) != want.value {
		return fmt.Sprintf("its value differs from the one put at revision %d", want.mod)
	}
	return ""
}
