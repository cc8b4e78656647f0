package snapstore

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// DamagePrefix is where the store records the backup objects that a restore found damaged
// (they failed verification while it read them): damaged/<object key>.json. A listing
// leaves a recorded object out of the restorable window, so that it never shows a point a
// restore cannot reach; the object itself stays in the store (it may be the last copy of
// what it holds: a person decides).
const DamagePrefix = "damaged/"

// damageVersion is the version of a damage record's format.
const damageVersion = 1

// maxDamageSize bounds what is read of one damage record.
const maxDamageSize = 64 << 10

func damageKey(key string) string { return DamagePrefix + key + ".json" }

// RecordDamage records that snap failed verification (by says what found it, err why). A
// record of the same object at the same size is kept as it is: the first finding is the
// evidence of when the damage was there.
func (s *Store) RecordDamage(ctx context.Context, snap catalog.Snapshot, by string, err error) error {
	if s.foreign != nil {
		return nil // another tool's store is only read: the damage is logged, not recorded
	}
	if old, rerr := s.readDamage(ctx, damageKey(snap.Key)); rerr == nil && old.Key == snap.Key && old.Size == snap.Size {
		return nil
	}
	d := catalog.Damage{Version: damageVersion, Key: snap.Key, Size: snap.Size, Found: time.Now().UTC(), By: by, Reason: err.Error()}
	if len(d.Reason) > 4096 {
		d.Reason = d.Reason[:4096]
	}
	data, merr := json.MarshalIndent(d, "", "  ")
	if merr != nil {
		return fmt.Errorf("record that %s is damaged: %w", snap.Key, merr)
	}
	if werr := s.writeRecord(ctx, damageKey(snap.Key), data, false); werr != nil {
		return fmt.Errorf("record that %s is damaged in store %q: %w", snap.Key, s.url, werr)
	}
	return nil
}

// DamagedIn returns, of the listed objects, those the store records as damaged (a record
// whose size differs from the object's no longer applies), by key.
func (s *Store) DamagedIn(ctx context.Context, listed ...[]catalog.Snapshot) (map[string]catalog.Damage, error) {
	if s.foreign != nil {
		return map[string]catalog.Damage{}, nil // nothing is recorded in another tool's store
	}
	sizes := map[string]int64{}
	for _, l := range listed {
		for _, snap := range l {
			sizes[snap.Key] = snap.Size
		}
	}
	out := map[string]catalog.Damage{}
	err := s.eachObject(ctx, DamagePrefix, func(obj *blob.ListObject) error {
		key, ok := strings.CutSuffix(strings.TrimPrefix(obj.Key, DamagePrefix), ".json")
		size, listedNow := sizes[key]
		if !ok || !listedNow {
			return nil
		}
		d, err := s.readDamage(ctx, obj.Key)
		switch {
		case gcerrors.Code(err) == gcerrors.NotFound:
			return nil
		case err != nil:
			return err
		case d.Key == key && d.Size == size:
			out[key] = d
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the damage records of store %q: %w", s.url, err)
	}
	return out, nil
}

// DamageRecords returns the store's damage records that still apply, sorted by key: those
// whose object is still in the store with the size it had when it was found damaged. It
// lists the damage records only (one small listing), and reads each record and its object's
// attributes, so that a running member can watch them without listing the backups.
func (s *Store) DamageRecords(ctx context.Context) ([]catalog.Damage, error) {
	if s.foreign != nil {
		return nil, nil // nothing is recorded in another tool's store
	}
	var out []catalog.Damage
	err := s.eachObject(ctx, DamagePrefix, func(obj *blob.ListObject) error {
		key, ok := strings.CutSuffix(strings.TrimPrefix(obj.Key, DamagePrefix), ".json")
		if !ok {
			return nil
		}
		d, err := s.readDamage(ctx, obj.Key)
		switch {
		case gcerrors.Code(err) == gcerrors.NotFound:
			return nil
		case err != nil:
			return err
		case d.Key != key:
			return nil
		}
		attrs, err := s.bucket.Attributes(ctx, key)
		switch {
		case gcerrors.Code(err) == gcerrors.NotFound:
			return nil // the object is gone: the record no longer applies
		case err != nil:
			return err
		case attrs.Size == d.Size:
			out = append(out, d)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the damage records of store %q: %w", s.url, err)
	}
	return out, nil
}

func (s *Store) readDamage(ctx context.Context, key string) (catalog.Damage, error) {
	r, err := s.bucket.NewReader(ctx, key, nil)
	if err != nil {
		return catalog.Damage{}, err
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, maxDamageSize+1))
	if err != nil {
		return catalog.Damage{}, err
	}
	var d catalog.Damage
	if len(data) > maxDamageSize || json.Unmarshal(data, &d) != nil || d.Version != damageVersion {
		return catalog.Damage{}, fmt.Errorf("%s is not a damage record etcdbr reads: move it away", key)
	}
	return d, nil
}
