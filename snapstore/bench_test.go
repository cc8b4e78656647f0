package snapstore

import (
	"context"
	"io"
	"testing"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// BenchmarkWrite measures an upload to a file store of 64 MiB of mixed data.
func BenchmarkWrite(b *testing.B) {
	const size = 64 << 20
	s, err := Open(context.Background(), "file://"+b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.SetBytes(size)
	for i := range b.N {
		w, err := s.Create(context.Background(), catalog.Snapshot{Kind: catalog.KindFull, Revision: int64(i + 1), Time: testTime})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(w, newGenerator(size)); err != nil {
			b.Fatal(err)
		}
		if _, err := w.Commit(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRead measures reading back a 64 MiB object from a file store.
func BenchmarkRead(b *testing.B) {
	const size = 64 << 20
	s, err := Open(context.Background(), "file://"+b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	w, err := s.Create(context.Background(), catalog.Snapshot{Kind: catalog.KindFull, Revision: 1, Time: testTime})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(w, newGenerator(size)); err != nil {
		b.Fatal(err)
	}
	snap, err := w.Commit()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		r, err := s.Open(context.Background(), snap)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			b.Fatal(err)
		}
		r.Close()
	}
}

// BenchmarkGenerate is the cost of producing the benchmark data alone.
func BenchmarkGenerate(b *testing.B) {
	const size = 64 << 20
	b.SetBytes(size)
	for range b.N {
		if _, err := io.Copy(io.Discard, newGenerator(size)); err != nil {
			b.Fatal(err)
		}
	}
}
