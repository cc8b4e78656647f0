package diskspace

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"testing"
)

func TestFullAndReadOnly(t *testing.T) {
	for _, c := range []struct {
		name           string
		err            error
		full, readOnly bool
	}{
		{"nil", nil, false, false},
		{"ENOSPC wrapped", fmt.Errorf("write db: %w", &fs.PathError{Op: "write", Path: "/d/db", Err: syscall.ENOSPC}), true, false},
		{"EDQUOT", fmt.Errorf("x: %w", syscall.EDQUOT), true, false},
		{"ENOSPC as text", errors.New("failed to commit tx: write /d/db: no space left on device"), true, false},
		{"EROFS wrapped", fmt.Errorf("open: %w", &fs.PathError{Op: "open", Path: "/s/x.tmp", Err: syscall.EROFS}), false, true},
		{"EROFS as text", errors.New("open /s/x.tmp: read-only file system"), false, true},
		{"other", fmt.Errorf("x: %w", syscall.EACCES), false, false},
	} {
		if got := Full(c.err); got != c.full {
			t.Errorf("%s: Full = %v, want %v", c.name, got, c.full)
		}
		if got := ReadOnly(c.err); got != c.readOnly {
			t.Errorf("%s: ReadOnly = %v, want %v", c.name, got, c.readOnly)
		}
	}
}

func TestBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0:             "0 B",
		1023:          "1023 B",
		1024:          "1.0 KiB",
		64_000_000:    "61.0 MiB",
		3 << 30:       "3.0 GiB",
		5 << 40:       "5.0 TiB",
		(1 << 20) + 1: "1.0 MiB",
	} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestAvailable(t *testing.T) {
	n, err := Available(t.TempDir())
	if err != nil {
		if errors.Is(err, errors.ErrUnsupported) {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	if n <= 0 {
		t.Fatalf("Available(a temp dir) = %d, want some room", n)
	}
	if _, err := Available("/does/not/exist"); err == nil {
		t.Fatal("Available of a missing path: no error")
	}
}
