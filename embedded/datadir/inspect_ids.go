package datadir

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/fileutil"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
)

// IDs are the cluster and member a data dir belongs to, in etcd's hex form (as etcdctl
// prints it).
type IDs struct {
	ClusterID string
	MemberID  string
}

// ReadIDs reads the cluster and member IDs of a data dir from the
// metadata record at the start of its WAL (walDir "" means
// <dataDir>/member/wal). It reads only the first records of one WAL file and
// never modifies anything.
func ReadIDs(dataDir, walDir string) (IDs, error) {
	id, err := readWALIDs(newMemberLayout(dataDir, walDir).walDir)
	if err != nil {
		return IDs{}, fmt.Errorf("read the cluster ID of data dir %q: %w", dataDir, err)
	}
	return id, nil
}

// readWALIDs decodes the metadata record of the newest WAL file (every
// WAL file starts with it).
func readWALIDs(walDir string) (IDs, error) {
	entries, err := os.ReadDir(walDir)
	if err != nil {
		return IDs{}, fmt.Errorf("cannot read WAL dir %q: %w", walDir, err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".wal") && !e.IsDir() {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		return IDs{}, fmt.Errorf("WAL dir %q holds no WAL files", walDir)
	}
	sort.Strings(names)
	path := filepath.Join(walDir, names[len(names)-1])
	f, err := os.Open(path)
	if err != nil {
		return IDs{}, fmt.Errorf("cannot read WAL file %q: %w", path, err)
	}
	defer f.Close()
	dec := wal.NewDecoder(fileutil.NewFileReader(f))
	var rec walpb.Record
	for range 8 { // crc, metadata, snapshot: the metadata comes second
		if err := dec.Decode(&rec); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return IDs{}, fmt.Errorf("WAL file %q: %w", path, err)
		}
		if rec.Type != wal.MetadataType {
			continue
		}
		var md etcdserverpb.Metadata
		if err := md.Unmarshal(rec.Data); err != nil {
			return IDs{}, fmt.Errorf("WAL file %q: undecodable metadata: %v", path, err)
		}
		return IDs{ClusterID: types.ID(md.ClusterID).String(), MemberID: types.ID(md.NodeID).String()}, nil
	}
	return IDs{}, fmt.Errorf("WAL file %q has no metadata record at its start", path)
}
