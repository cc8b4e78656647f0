package snapstore

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// HistoryPrefix is where the store records the histories that restores started, one object
// per history: history/<start>.json, <start> zero-padded to 20 digits like revisions in
// snapshot names.
const HistoryPrefix = "history/"

// historyVersion is the version of a history record's format.
const historyVersion = 1

// maxHistorySize bounds what is read of one history record.
const maxHistorySize = 64 << 10

// HistoryKey returns the key of the record of the history starting at start.
func HistoryKey(start int64) string {
	return fmt.Sprintf("%s%020d.json", HistoryPrefix, start)
}

// parseHistoryKey returns the start revision in a HistoryKey.
func parseHistoryKey(key string) (int64, bool) {
	rest, ok := strings.CutPrefix(key, HistoryPrefix)
	if !ok {
		return 0, false
	}
	digits, ok := strings.CutSuffix(rest, ".json")
	if !ok || len(digits) != 20 {
		return 0, false
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n < 1 {
		return 0, false
	}
	return n, true
}

// RecordHistory records h in the store, unless a record of a history starting at h.Start is
// there already (a restart records the same history again: the first record stays).
func (s *Store) RecordHistory(ctx context.Context, h catalog.History) error {
	if h.Start < 1 {
		return fmt.Errorf("record a history in store %q: start revision %d: revisions start at 1", s.url, h.Start)
	}
	h.Version = historyVersion
	data, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return fmt.Errorf("record the history starting at revision %d in store %q: %w", h.Start, s.url, err)
	}
	key := HistoryKey(h.Start)
	if ok, err := s.bucket.Exists(ctx, key); err != nil {
		return fmt.Errorf("record the history starting at revision %d in store %q: %w", h.Start, s.url, err)
	} else if ok {
		return nil
	}
	if err := s.writeRecord(ctx, key, data, false); err != nil {
		return fmt.Errorf("record the history starting at revision %d in store %q: %w", h.Start, s.url, err)
	}
	return nil
}

// Histories returns the histories the store records, sorted by Start. Records this etcdbr
// cannot read are errors that name them.
func (s *Store) Histories(ctx context.Context) ([]catalog.History, error) {
	if s.foreign != nil {
		return nil, nil // another tool's store records no histories
	}
	var out []catalog.History
	var readErr error
	err := s.eachObject(ctx, HistoryPrefix, func(obj *blob.ListObject) error {
		start, ok := parseHistoryKey(obj.Key)
		if !ok {
			return nil
		}
		h, err := s.readHistory(ctx, obj.Key, start)
		switch {
		case gcerrors.Code(err) == gcerrors.NotFound:
			return nil // deleted since the listing
		case err != nil:
			readErr = err
			return err
		}
		out = append(out, h)
		return nil
	})
	switch {
	case readErr != nil:
		return nil, readErr
	case err != nil:
		return nil, fmt.Errorf("list the histories in store %q: %w", s.url, err)
	}
	slices.SortFunc(out, func(a, b catalog.History) int { return cmp.Compare(a.Start, b.Start) })
	return out, nil
}

func (s *Store) readHistory(ctx context.Context, key string, start int64) (catalog.History, error) {
	r, err := s.bucket.NewReader(ctx, key, nil)
	if err != nil {
		return catalog.History{}, err
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, maxHistorySize+1))
	if err != nil {
		return catalog.History{}, fmt.Errorf("read %s in store %q: %w", key, s.url, err)
	}
	var h catalog.History
	switch err := json.Unmarshal(data, &h); {
	case len(data) > maxHistorySize:
		return catalog.History{}, fmt.Errorf("store %q: %s is larger than %d bytes: it was not written by etcdbr; move it away", s.url, key, maxHistorySize)
	case err != nil:
		return catalog.History{}, fmt.Errorf("store %q: %s is unreadable (%v): it was not written by etcdbr; move it away", s.url, key, err)
	case h.Version != historyVersion:
		return catalog.History{}, fmt.Errorf("store %q: %s has version %d; this etcdbr reads version %d: use a newer etcdbr", s.url, key, h.Version, historyVersion)
	case h.Start != start:
		return catalog.History{}, fmt.Errorf("store %q: %s records start revision %d, not the one in its name: move it away", s.url, key, h.Start)
	}
	return h, nil
}
