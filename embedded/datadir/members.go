package datadir

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"go.etcd.io/etcd/server/v3/storage/schema"

	"github.com/etcdbr/etcdbr/internal/fsync"
)

// Member is one member of the cluster as a data dir's db records it.
type Member struct {
	ID        uint64
	Name      string
	PeerURLs  []string
	IsLearner bool
}

// ReadMembers reads the cluster's members from the db of a data dir that InspectWith found
// valid: etcd's members bucket, as the db last committed it (membership changes still only
// in the WAL are not seen). It opens the db read-only and modifies nothing; a db in use by
// a running etcd is an error.
func ReadMembers(dataDir string) ([]Member, error) {
	path := newMemberLayout(dataDir, "").db
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("read the members of data dir %q: %w", dataDir, err)
	}
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true, Timeout: dbLockTimeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("read the members of data dir %q: db file %q is %w (is etcd running on this data dir?)", dataDir, path, errLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("read the members of data dir %q: %w", dataDir, err)
	}
	defer db.Close()
	var members []Member
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(schema.Members.Name())
		if b == nil {
			return fmt.Errorf("db file %q has no %q bucket", path, schema.Members.Name())
		}
		return b.ForEach(func(k, v []byte) error {
			id, err := strconv.ParseUint(string(k), 16, 64)
			if err != nil {
				return fmt.Errorf("db file %q: member key %q is not an ID: %w", path, k, err)
			}
			var m struct {
				Name      string   `json:"name"`
				PeerURLs  []string `json:"peerURLs"`
				IsLearner bool     `json:"isLearner"`
			}
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("db file %q: member %s: %w", path, k, err)
			}
			members = append(members, Member{ID: id, Name: m.Name, PeerURLs: m.PeerURLs, IsLearner: m.IsLearner})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read the members of data dir %q: %w", dataDir, err)
	}
	sort.Slice(members, func(i, j int) bool { return members[i].ID < members[j].ID })
	return members, nil
}

// MoveAside moves the data dir (and walDir, when the WAL lives outside it) aside to
// AsideDir's free path, keeping it, and syncs the parent dirs: after it, there is no data
// dir. It returns where the data dir went ("" when there was none). Nothing is deleted.
func MoveAside(dataDir, walDir string, now time.Time, lg *slog.Logger) (string, error) {
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	var aside string
	if WALOutside(dataDir, walDir) {
		if _, err := os.Lstat(walDir); err == nil {
			to := AsideDir(walDir, now)
			if err := os.Rename(walDir, to); err != nil {
				return "", fmt.Errorf("move the WAL dir %q aside to %q: %w", walDir, to, err)
			}
			if err := fsync.Path(filepath.Dir(walDir)); err != nil {
				return "", err
			}
			lg.Info("moved the WAL dir aside", "from", walDir, "to", to)
		}
	}
	if _, err := os.Lstat(dataDir); err == nil {
		aside = AsideDir(dataDir, now)
		if err := os.Rename(dataDir, aside); err != nil {
			return "", fmt.Errorf("move the data dir %q aside to %q: %w", dataDir, aside, err)
		}
		if err := fsync.Path(filepath.Dir(dataDir)); err != nil {
			return "", err
		}
		lg.Info("moved the data dir aside", "from", dataDir, "to", aside)
	}
	return aside, nil
}
