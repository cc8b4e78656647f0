package dbrev

import (
	"encoding/binary"
	"fmt"
)

// TombstoneMark is the byte etcd appends to a key of the "key" bucket to mark a delete.
const TombstoneMark = 't'

// ParseKey reads a key of the "key" bucket, where etcd's mvcc store keeps change i of revision
// R under R (8 bytes, big-endian), '_', i (8 bytes, big-endian), with TombstoneMark after them
// for a delete (mvcc.RevToBytes, mvcc.BucketKey): it returns R and whether the key marks a
// delete.
func ParseKey(k []byte) (main int64, tombstone bool, err error) {
	if (len(k) != revBytesLen && len(k) != revBytesLen+1) || k[8] != '_' || (len(k) == revBytesLen+1 && k[revBytesLen] != TombstoneMark) {
		return 0, false, fmt.Errorf("malformed revision key %x in the \"key\" bucket", k)
	}
	return int64(binary.BigEndian.Uint64(k)), len(k) == revBytesLen+1, nil
}
