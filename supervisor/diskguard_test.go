package supervisor

import (
	"testing"

	"go.etcd.io/etcd/server/v3/storage/wal"
)

// The data dir counts as full below etcd's WAL file size, which etcd keeps in a variable.
func TestDataDirReserveIsAWALFile(t *testing.T) {
	if dataDirReserve != wal.SegmentSizeBytes {
		t.Fatalf("dataDirReserve is %d, etcd's WAL files are %d bytes", dataDirReserve, wal.SegmentSizeBytes)
	}
}
