package foreign

import (
	"testing"
	"time"
)

func TestParseEBRKey(t *testing.T) {
	created := time.Unix(1700000000, 0).UTC()
	tests := []struct {
		key  string
		ok   bool
		want EBRObject
	}{
		{"v2/Full-00000000-00001234-1700000000.gz", true, EBRObject{Layout: "v2", Kind: EBRFull, Last: 1234, Compression: Gzip}},
		{"v2/Full-00000000-00001234-1700000000", true, EBRObject{Layout: "v2", Kind: EBRFull, Last: 1234, Compression: None}},
		{"v2/Full-00000000-00001234-1700000000.zlib.final", true, EBRObject{Layout: "v2", Kind: EBRFull, Last: 1234, Compression: Zlib, Final: true}},
		{"v2/Full-00000000-00001234-1700000000.final", true, EBRObject{Layout: "v2", Kind: EBRFull, Last: 1234, Final: true}},
		{"v2/Incr-00001235-00001300-1700000000.Z", true, EBRObject{Layout: "v2", Kind: EBRDelta, Start: 1235, Last: 1300, Compression: LZW}},
		{"v2/Incr-123456789-123456790-1700000000", true, EBRObject{Layout: "v2", Kind: EBRDelta, Start: 123456789, Last: 123456790}},
		{"v1/Backup-1699999000/Full-00000000-00000042-1700000000", true, EBRObject{Layout: "v1", Kind: EBRFull, Last: 42}},
		{"v1/Backup-1699999000/Incr-00000043-00000050-1700000000.gz", true, EBRObject{Layout: "v1", Kind: EBRDelta, Start: 43, Last: 50, Compression: Gzip}},
		// Not snapshots, or not ours to read.
		{"v2/Full-00000000-00001234-1700000000.gz/0000000001", false, EBRObject{}}, // a chunk
		{"v1/Full-00000000-00001234-1700000000", false, EBRObject{}},               // v1 needs its Backup dir
		{"v1/Backup-x/Full-00000000-00001234-1700000000", false, EBRObject{}},
		{"v3/Full-00000000-00001234-1700000000", false, EBRObject{}},
		{"v2/Chunk-00000000-00001234-1700000000", false, EBRObject{}},
		{"v2/Full-00000000-00001234-1700000000.bz2", false, EBRObject{}},
		{"v2/Full-00000000-00001234-1700000000.gz.gz", false, EBRObject{}},
		{"v2/Incr-00001234-00001234-1700000000.final", false, EBRObject{}}, // only full snapshots are final
		{"v2/Incr-00000000-00001234-1700000000", false, EBRObject{}},       // a delta starts at 1 or later
		{"v2/Incr-00001300-00001235-1700000000", false, EBRObject{}},       // start after last
		{"v2/Full-00000000-00000000-1700000000", false, EBRObject{}},       // no revision 0
		{"v2/Full-00000000-0000x234-1700000000", false, EBRObject{}},
		{"v2/Full-00000000-00001234", false, EBRObject{}},
		{"v2/Full-00000000-00001234-1700000000-1", false, EBRObject{}},
		{"full/00000000000000001234-20261125T154500.123Z.db.zst", false, EBRObject{}},
		{"v2/", false, EBRObject{}},
	}
	for _, tt := range tests {
		got, ok := ParseEBRKey(tt.key)
		if ok != tt.ok {
			t.Errorf("ParseEBRKey(%q) ok = %v, want %v", tt.key, ok, tt.ok)
			continue
		}
		if !ok {
			continue
		}
		tt.want.Key, tt.want.Created = tt.key, created
		if got != tt.want {
			t.Errorf("ParseEBRKey(%q) = %+v, want %+v", tt.key, got, tt.want)
		}
	}
}
