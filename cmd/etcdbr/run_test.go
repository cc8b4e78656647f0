package main

import (
	"testing"
	"time"
)

func TestByteSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"67108864", 64 << 20, true},
		{"64MiB", 64 << 20, true},
		{"64mi", 64 << 20, true},
		{"512KiB", 512 << 10, true},
		{"1GiB", 1 << 30, true},
		{"100MB", 100e6, true},
		{"2 GB", 2e9, true},
		{"10b", 10, true},
		{"", 0, false},
		{"MiB", 0, false},
		{"-1MiB", 0, false},
		{"1.5GiB", 0, false},
		{"12XB", 0, false},
		{"99999999999GiB", 0, false},
	} {
		var b byteSize
		err := b.UnmarshalText([]byte(c.in))
		if (err == nil) != c.ok {
			t.Errorf("%q: err %v, want ok=%v", c.in, err, c.ok)
			continue
		}
		if c.ok && int64(b) != c.want {
			t.Errorf("%q: %d, want %d", c.in, b, c.want)
		}
	}
	for in, want := range map[byteSize]string{64 << 20: "64MiB", 1 << 30: "1GiB", 1536: "1536", 3 << 10: "3KiB", 0: "0"} {
		if got := in.String(); got != want {
			t.Errorf("String(%d) = %q, want %q", int64(in), got, want)
		}
	}
}

func TestDeltaFlagsValidate(t *testing.T) {
	for _, c := range []struct {
		period time.Duration
		limit  byteSize
		ok     bool
	}{
		{10 * time.Second, 64 << 20, true},
		{0, 64 << 20, true}, // disabled
		{time.Second, 1 << 20, true},
		{500 * time.Millisecond, 64 << 20, false},
		{-time.Second, 64 << 20, false},
		{10 * time.Second, 1000, false},
	} {
		err := DeltaFlags{DeltaSnapshotPeriod: c.period, DeltaSnapshotMemoryLimit: c.limit}.validate()
		if (err == nil) != c.ok {
			t.Errorf("period %v limit %v: err %v, want ok=%v", c.period, c.limit, err, c.ok)
		}
	}
}
