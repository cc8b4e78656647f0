package snapstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// The records of whole-cluster restores (catalog.Intent), under cluster-restore/:
//
//	cluster-restore/active.json               the intent that runs (created exclusively)
//	cluster-restore/<id>/intent.json          every intent, kept after it ended
//	cluster-restore/<id>/member-<name>.json   one member's progress (written by it alone)
//	cluster-restore/<id>/end.json             how it ended
//	cluster-restore/freezing.json             a command freezing the cluster before it records an intent
//
// A member polls active.json (one small read); the rest is read when one is active, and
// freezing.json only while the member's cluster is frozen with no intent active.
const (
	intentDir       = "cluster-restore/"
	activeIntentKey = intentDir + "active.json"
	freezeNoticeKey = intentDir + "freezing.json"
	maxIntentSize   = 64 << 10
)

// ErrIntentRunning is wrapped by the error of CreateIntent when another intent is active.
var ErrIntentRunning = errors.New("a cluster restore is already running")

func intentKey(id string) string           { return intentDir + id + "/intent.json" }
func intentEndKey(id string) string        { return intentDir + id + "/end.json" }
func progressPrefix(id string) string      { return intentDir + id + "/member-" }
func progressKey(id, member string) string { return progressPrefix(id) + member + ".json" }
func validIntentName(name string) bool {
	return name != "" && !strings.ContainsAny(name, "/\\") && name != "." && name != ".."
}
func intentErr(op, id string, err error) error {
	return fmt.Errorf("%s of cluster restore %q: %w", op, id, err)
}

// CreateIntent records in as the active intent. The write is exclusive where the store
// supports it (if the object does not exist): of two intents given at once, one is refused
// with an error wrapping ErrIntentRunning. An active intent that ended (its end record is
// there) or whose deadline passed is cleared first (the latter recorded as abandoned).
func (s *Store) CreateIntent(ctx context.Context, in catalog.Intent) error {
	if err := s.readOnly("record a cluster restore"); err != nil {
		return err
	}
	if err := in.Check(); err != nil {
		return err
	}
	data, err := json.MarshalIndent(in, "", "  ")
	if err != nil {
		return intentErr("record", in.ID, err)
	}
	// The copy that outlives the active record comes first: a member that sees the active
	// one can always read it again by ID.
	if err := s.writeRecord(ctx, intentKey(in.ID), data, false); err != nil {
		return fmt.Errorf("record cluster restore %q in %q: %w", in.ID, s.url, err)
	}
	for attempt := 0; ; attempt++ {
		err := s.writeRecord(ctx, activeIntentKey, data, true)
		if gcerrors.Code(err) == gcerrors.Unimplemented {
			// The driver has no conditional write: check, then write; the race window
			// between two people giving an intent at the same moment is the driver's.
			_, ok, rerr := s.ActiveIntent(ctx)
			switch {
			case rerr != nil:
				return rerr
			case !ok:
				err = s.writeRecord(ctx, activeIntentKey, data, false)
			default:
				err = fmt.Errorf("exists: %w", ErrIntentRunning)
			}
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, errRecordExists) && !errors.Is(err, ErrIntentRunning) {
			return fmt.Errorf("record cluster restore %q in %q: %w", in.ID, s.url, err)
		}
		cur, ok, rerr := s.ActiveIntent(ctx)
		if rerr != nil {
			return rerr
		}
		if ok && attempt == 0 {
			// Clear an active record that is over: ended, or past its deadline.
			_, ended, eerr := s.IntentEnd(ctx, cur.ID)
			if eerr != nil {
				return eerr
			}
			switch {
			case ended:
				err = s.clearActive(ctx, cur.ID)
			case cur.Expired(in.Created):
				err = s.EndIntent(ctx, catalog.IntentEnd{ID: cur.ID, Outcome: catalog.OutcomeAbandoned, Ended: in.Created,
					Reason: "its deadline " + cur.Deadline.UTC().Format("2006-01-02T15:04:05Z") + " passed"})
			default:
				return fmt.Errorf("cluster restore %q runs since %s (deadline %s): %w; wait for it to end (etcdbr cluster status)",
					cur.ID, cur.Created.UTC().Format("15:04:05"), cur.Deadline.UTC().Format("15:04:05"), ErrIntentRunning)
			}
			if err != nil {
				return err
			}
			continue
		}
		if ok {
			return fmt.Errorf("cluster restore %q runs: %w", cur.ID, ErrIntentRunning)
		}
		if attempt > 0 {
			return fmt.Errorf("record cluster restore %q in %q: the active record changed twice meanwhile: %w", in.ID, s.url, ErrIntentRunning)
		}
	}
}

// WriteFreezeNotice records that a command freezes the cluster before it records an intent
// (catalog.FreezeNotice), so that no member lifts the freeze meanwhile.
func (s *Store) WriteFreezeNotice(ctx context.Context, n catalog.FreezeNotice) error {
	if err := s.readOnly("record a cluster freeze"); err != nil {
		return err
	}
	data, err := json.MarshalIndent(n, "", "  ")
	if err != nil {
		return fmt.Errorf("record the cluster freeze in %q: %w", s.url, err)
	}
	if err := s.writeRecord(ctx, freezeNoticeKey, data, false); err != nil {
		return fmt.Errorf("record the cluster freeze in %q: %w", s.url, err)
	}
	return nil
}

// FreezeNotice returns the freeze notice of a command; ok is false when there is none.
func (s *Store) FreezeNotice(ctx context.Context) (catalog.FreezeNotice, bool, error) {
	var n catalog.FreezeNotice
	ok, err := s.readSmall(ctx, freezeNoticeKey, &n)
	if err != nil || !ok {
		return catalog.FreezeNotice{}, false, err
	}
	return n, true, nil
}

// ClearFreezeNotice removes the freeze notice (none is not an error).
func (s *Store) ClearFreezeNotice(ctx context.Context) error {
	if err := s.bucket.Delete(ctx, freezeNoticeKey); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		return fmt.Errorf("remove %s from %q: %w", freezeNoticeKey, s.url, err)
	}
	return nil
}

// ActiveIntent returns the intent that runs; ok is false when none does.
func (s *Store) ActiveIntent(ctx context.Context) (catalog.Intent, bool, error) {
	var in catalog.Intent
	ok, err := s.readSmall(ctx, activeIntentKey, &in)
	if err != nil || !ok {
		return catalog.Intent{}, false, err
	}
	if err := in.Check(); err != nil {
		return catalog.Intent{}, false, fmt.Errorf("store %q: %s: %w", s.url, activeIntentKey, err)
	}
	return in, true, nil
}

// Intent returns the intent with the given ID, active or ended; ok is false when the store
// has none.
func (s *Store) Intent(ctx context.Context, id string) (catalog.Intent, bool, error) {
	var in catalog.Intent
	if !validIntentName(id) {
		return in, false, fmt.Errorf("cluster restore ID %q: not a name", id)
	}
	ok, err := s.readSmall(ctx, intentKey(id), &in)
	return in, ok, err
}

// IntentEnd returns how the intent id ended; ok is false while it has not.
func (s *Store) IntentEnd(ctx context.Context, id string) (catalog.IntentEnd, bool, error) {
	var end catalog.IntentEnd
	if !validIntentName(id) {
		return end, false, fmt.Errorf("cluster restore ID %q: not a name", id)
	}
	ok, err := s.readSmall(ctx, intentEndKey(id), &end)
	return end, ok, err
}

// EndIntent records how an intent ended and clears the active record if it still names it.
// Writing it twice is harmless (the members that see the end write the same).
func (s *Store) EndIntent(ctx context.Context, end catalog.IntentEnd) error {
	if !validIntentName(end.ID) {
		return fmt.Errorf("cluster restore ID %q: not a name", end.ID)
	}
	end.Version = 1
	data, err := json.MarshalIndent(end, "", "  ")
	if err != nil {
		return intentErr("end", end.ID, err)
	}
	if err := s.writeRecord(ctx, intentEndKey(end.ID), data, false); err != nil {
		return fmt.Errorf("record the end of cluster restore %q in %q: %w", end.ID, s.url, err)
	}
	return s.clearActive(ctx, end.ID)
}

// clearActive deletes the active record when it names id. Object stores have no portable
// conditional delete: the record is read just before; a new intent recorded in between
// by someone else, after this one ended, is the race left.
func (s *Store) clearActive(ctx context.Context, id string) error {
	cur, ok, err := s.ActiveIntent(ctx)
	if err != nil || !ok || cur.ID != id {
		return err
	}
	if err := s.bucket.Delete(ctx, activeIntentKey); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		return fmt.Errorf("clear the active cluster restore %q in %q: %w", id, s.url, err)
	}
	return nil
}

// WriteIntentProgress records member p.Member's progress with the intent id.
func (s *Store) WriteIntentProgress(ctx context.Context, id string, p catalog.MemberProgress) error {
	if !validIntentName(id) || !validIntentName(p.Member) {
		return fmt.Errorf("cluster restore %q, member %q: not a name", id, p.Member)
	}
	p.Version = 1
	data, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return intentErr("record the progress", id, err)
	}
	if err := s.writeRecord(ctx, progressKey(id, p.Member), data, false); err != nil {
		return fmt.Errorf("record member %s's progress with cluster restore %q in %q: %w", p.Member, id, s.url, err)
	}
	return nil
}

// IntentProgress returns every member's progress with the intent id, sorted by member.
func (s *Store) IntentProgress(ctx context.Context, id string) ([]catalog.MemberProgress, error) {
	if !validIntentName(id) {
		return nil, fmt.Errorf("cluster restore ID %q: not a name", id)
	}
	var out []catalog.MemberProgress
	var readErr error
	err := s.eachObject(ctx, progressPrefix(id), func(obj *blob.ListObject) error {
		if !strings.HasSuffix(obj.Key, ".json") {
			return nil
		}
		var p catalog.MemberProgress
		ok, err := s.readSmall(ctx, obj.Key, &p)
		if err != nil {
			readErr = err
			return err
		}
		if ok {
			out = append(out, p)
		}
		return nil
	})
	switch {
	case readErr != nil:
		return nil, readErr
	case err != nil:
		return nil, fmt.Errorf("list the progress of cluster restore %q in %q: %w", id, s.url, err)
	}
	slices.SortFunc(out, func(a, b catalog.MemberProgress) int { return strings.Compare(a.Member, b.Member) })
	return out, nil
}

// readSmall reads the JSON record key into v; ok is false when it does not exist.
func (s *Store) readSmall(ctx context.Context, key string, v any) (bool, error) {
	if s.foreign != nil {
		return false, nil // another tool's store records no cluster restores
	}
	r, err := s.bucket.NewReader(ctx, key, nil)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s in %q: %w", key, s.url, err)
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, maxIntentSize+1))
	switch {
	case gcerrors.Code(err) == gcerrors.NotFound:
		return false, nil
	case err != nil:
		return false, fmt.Errorf("read %s in %q: %w", key, s.url, err)
	case len(data) > maxIntentSize:
		return false, fmt.Errorf("store %q: %s is larger than %d bytes: it was not written by etcdbr; move it away", s.url, key, maxIntentSize)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return false, fmt.Errorf("store %q: %s is unreadable (%v): it was not written by etcdbr; move it away", s.url, key, err)
	}
	return true, nil
}
