package snapstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// snapshotPayload is a full snapshot payload as etcd sends it: a "db"
// followed by its SHA-256.
func snapshotPayload(db []byte) []byte {
	sum := sha256.Sum256(db)
	return append(bytes.Clone(db), sum[:]...)
}

// deltaPayload encodes a delta of revisions from..to, one put per revision.
func deltaPayload(t *testing.T, from, to int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	e, err := NewDeltaEncoder(&buf, from, to)
	require.NoError(t, err)
	for rev := from; rev <= to; rev++ {
		require.NoError(t, e.Revision(Revision{Revision: rev, Time: testTime, Events: []*mvccpb.Event{{
			Type: mvccpb.PUT,
			Kv:   &mvccpb.KeyValue{Key: []byte("k"), Value: []byte("v"), CreateRevision: from, ModRevision: rev, Version: rev - from + 1},
		}}}))
	}
	require.NoError(t, e.Close())
	return buf.Bytes()
}

// writeChain writes a full snapshot at 10 and deltas 11..20, 21..30 (the
// second one to two keys: the store's recipients, and one more).
func writeChain(t *testing.T, s *Store) (full, d1, d2 Snapshot) {
	full = writeObject(t, s, Snapshot{Kind: KindFull, Revision: 10, Time: testTime}, snapshotPayload(compressible(1<<20)))
	d1 = writeObject(t, s, Snapshot{Kind: KindDelta, From: 11, Revision: 20, Time: testTime.Add(time.Second)}, deltaPayload(t, 11, 20))
	d2 = writeObject(t, s, Snapshot{Kind: KindDelta, From: 21, Revision: 30, Time: testTime.Add(2 * time.Second)}, deltaPayload(t, 21, 30))
	return full, d1, d2
}

func TestVerify(t *testing.T) {
	ctx := context.Background()
	stores(t, func(t *testing.T, s *Store) {
		full, d1, d2 := writeChain(t, s)
		var checked []string
		rep, err := Verify(ctx, s, VerifyOptions{Checked: func(snap Snapshot, problem error) {
			assert.NoError(t, problem)
			checked = append(checked, snap.Key)
		}})
		require.NoError(t, err)
		assert.True(t, rep.OK(), "%v", rep.Problems)
		assert.Equal(t, []string{full.Key, d1.Key, d2.Key}, checked)
		assert.Equal(t, 1, rep.Fulls)
		assert.Equal(t, 2, rep.Deltas)
		assert.Equal(t, full.Size+d1.Size+d2.Size, rep.StoredBytes)
		assert.Equal(t, full, rep.Latest.Full)
		assert.Equal(t, []Snapshot{d1, d2}, rep.Latest.Deltas)
		assert.EqualValues(t, 30, rep.Latest.Revision)
	})
}

func TestVerifyFindsProblems(t *testing.T) {
	ctx := context.Background()
	id, err := age.GenerateX25519Identity()
	require.NoError(t, err)
	for name, tc := range map[string]struct {
		damage  func(t *testing.T, s *Store, dir string, full, d1, d2 Snapshot) string // returns the key at fault
		message string
	}{
		"flipped byte": {func(t *testing.T, s *Store, dir string, full, d1, d2 Snapshot) string {
			path := filepath.Join(dir, filepath.FromSlash(d1.Key))
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			b[len(b)/2] ^= 0x40
			require.NoError(t, os.WriteFile(path, b, 0o600))
			return d1.Key
		}, "corrupt"},
		"db does not match etcd's hash": {func(t *testing.T, s *Store, dir string, full, d1, d2 Snapshot) string {
			bad := append(compressible(4096), make([]byte, 32)...)
			return writeObject(t, s, Snapshot{Kind: KindFull, Revision: 30, Time: testTime}, bad).Key
		}, "does not match the SHA-256 etcd appended"},
		"delta named for other revisions": {func(t *testing.T, s *Store, dir string, full, d1, d2 Snapshot) string {
			return writeObject(t, s, Snapshot{Kind: KindDelta, From: 31, Revision: 40, Time: testTime}, deltaPayload(t, 31, 39)).Key
		}, "holds revisions 31..39, its name says 31..40"},
		"encrypted for someone else": {func(t *testing.T, s *Store, dir string, full, d1, d2 Snapshot) string {
			other, err := age.GenerateX25519Identity()
			require.NoError(t, err)
			s.opts.Recipients = []age.Recipient{other.Recipient()}
			defer func() { s.opts.Recipients = nil }()
			return writeObject(t, s, Snapshot{Kind: KindDelta, From: 31, Revision: 32, Time: testTime}, deltaPayload(t, 31, 32)).Key
		}, "give the identity"},
		"gap": {func(t *testing.T, s *Store, dir string, full, d1, d2 Snapshot) string {
			return writeObject(t, s, Snapshot{Kind: KindDelta, From: 35, Revision: 36, Time: testTime}, deltaPayload(t, 35, 36)).Key
		}, "gap: no delta covers revisions 31..34"},
	} {
		t.Run(name, func(t *testing.T) {
			s, dir := openFileStore(t, Options{Identities: []age.Identity{id}})
			full, d1, d2 := writeChain(t, s)
			key := tc.damage(t, s, dir, full, d1, d2)
			rep, err := Verify(ctx, s, VerifyOptions{RecordDamage: true})
			require.NoError(t, err)
			require.False(t, rep.OK())
			// Damaged content is recorded, so that listings leave it out; other problems
			// (a gap, a missing identity) are not damage.
			fulls, err := s.List(ctx, KindFull)
			require.NoError(t, err)
			deltas, err := s.List(ctx, KindDelta)
			require.NoError(t, err)
			damaged, err := s.DamagedIn(ctx, fulls, deltas)
			require.NoError(t, err)
			if name == "gap" || name == "encrypted for someone else" {
				assert.Empty(t, damaged)
			} else {
				assert.Contains(t, damaged, key)
				assert.Equal(t, "verify", damaged[key].By)
			}
			var found []string
			for _, p := range rep.Problems {
				found = append(found, p.String())
			}
			require.NotEmpty(t, found)
			assert.Contains(t, found[0], key, "the first problem names the object")
			assert.Contains(t, strings.Join(found, "\n"), tc.message)
			t.Log(strings.Join(found, "\n"))
		})
	}
}

func TestCheckChain(t *testing.T) {
	full := func(rev int64) Snapshot {
		return Snapshot{Kind: KindFull, Revision: rev, Time: testTime, Key: FullName(rev, testTime, false)}
	}
	delta := func(from, to int64, sec int) Snapshot {
		at := testTime.Add(time.Duration(sec) * time.Second)
		return Snapshot{Kind: KindDelta, From: from, Revision: to, Time: at, Key: DeltaName(from, to, at, false)}
	}
	for _, tc := range []struct {
		name   string
		fulls  []Snapshot
		deltas []Snapshot
		want   []string // substrings of the problems, in order
	}{
		{"empty", nil, nil, []string{"the store is empty"}},
		{"deltas without a full", nil, []Snapshot{delta(1, 5, 0)}, []string{"no full snapshot"}},
		{"fulls only", []Snapshot{full(10), full(20)}, nil, nil},
		{"continuous", []Snapshot{full(10), full(25)}, []Snapshot{delta(11, 20, 0), delta(21, 30, 1), delta(31, 31, 2)}, nil},
		{"a delta straddles a full", []Snapshot{full(10), full(15)}, []Snapshot{delta(11, 20, 0), delta(21, 22, 1)}, nil},
		{"retried upload of one range", []Snapshot{full(10)}, []Snapshot{delta(11, 20, 0), delta(11, 20, 5), delta(21, 30, 6)}, nil},
		{"deltas before the oldest full are ignored", []Snapshot{full(10)}, []Snapshot{delta(1, 3, 0), delta(7, 10, 0), delta(11, 12, 1)}, nil},
		{"gap", []Snapshot{full(10)}, []Snapshot{delta(11, 20, 0), delta(26, 30, 1)},
			[]string{"gap: no delta covers revisions 21..25 (after delta/00000000000000000011-00000000000000000020"}},
		{"gap right after the full", []Snapshot{full(10)}, []Snapshot{delta(12, 20, 0)},
			[]string{"gap: no delta covers revisions 11..11 (after the full snapshot at revision 10)"}},
		{"a later full bridges a revision bump", []Snapshot{full(10), full(1000)}, []Snapshot{delta(11, 20, 0), delta(1001, 1010, 1)}, nil},
		{"deltas pruned between two kept fulls", []Snapshot{full(100), full(300)}, []Snapshot{delta(101, 150, 0), delta(295, 320, 1)}, nil},
		{"no delta left before the newer full", []Snapshot{full(100), full(300)}, []Snapshot{delta(295, 320, 1)}, nil},
		{"a stranded delta between two fulls", []Snapshot{full(100), full(300)}, []Snapshot{delta(150, 160, 0), delta(295, 320, 1)},
			[]string{"gap: no delta covers revisions 101..149 (after the full snapshot at revision 100)"}},
		{"a delta ends right before the newer full", []Snapshot{full(100), full(300)}, []Snapshot{delta(280, 299, 0), delta(301, 320, 1)},
			[]string{"gap: no delta covers revisions 101..279"}},
		{"overlap", []Snapshot{full(10)}, []Snapshot{delta(11, 20, 0), delta(15, 25, 1)},
			[]string{"overlaps delta/00000000000000000011-00000000000000000020"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			problems := CheckChain(tc.fulls, tc.deltas)
			require.Len(t, problems, len(tc.want), "%v", problems)
			for i, want := range tc.want {
				assert.Contains(t, problems[i].String(), want)
			}
		})
	}
}
