package datadir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// CheckWritable reports a clear error if etcd could not write its data dir:
// dataDir itself and, when present, its member, member/snap and member/wal
// directories; or, if dataDir does not exist yet, the nearest existing parent
// (where etcd would create it). It writes and removes a small probe file in each
// directory it checks.
func CheckWritable(dataDir string) error {
	if dataDir == "" {
		return errors.New("no data dir given; set --data-dir")
	}
	notWritable := func(cause error) error {
		return fmt.Errorf("data dir %q is not writable: %v; fix the permissions or choose another --data-dir", dataDir, cause)
	}

	st, err := os.Stat(dataDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		parent, perr := nearestExisting(filepath.Dir(dataDir))
		if perr != nil {
			return notWritable(perr)
		}
		if err := probeDir(parent); err != nil {
			return notWritable(fmt.Errorf("cannot create it in %q: %w", parent, err))
		}
		return nil
	case err != nil:
		return notWritable(err)
	case !st.IsDir():
		return notWritable(fmt.Errorf("%q is a %s, not a directory", dataDir, describeMode(st.Mode())))
	}

	dirs := []string{dataDir}
	member := filepath.Join(dataDir, "member")
	for _, d := range []string{member, filepath.Join(member, "snap"), filepath.Join(member, "wal")} {
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			dirs = append(dirs, d)
		}
	}
	for _, d := range dirs {
		if err := probeDir(d); err != nil {
			return notWritable(err)
		}
	}
	return nil
}

// nearestExisting returns dir or its nearest ancestor that exists, which must
// be a directory.
func nearestExisting(dir string) (string, error) {
	for {
		st, err := os.Stat(dir)
		switch {
		case err == nil && st.IsDir():
			return dir, nil
		case err == nil:
			return "", fmt.Errorf("%q is a %s, not a directory", dir, describeMode(st.Mode()))
		case !errors.Is(err, fs.ErrNotExist):
			return "", err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no parent directory of %q exists", dir)
		}
		dir = parent
	}
}

// probeDir creates and removes a file in dir.
func probeDir(dir string) error {
	f, err := os.CreateTemp(dir, ".etcdbr-write-probe-*")
	if err != nil {
		return err
	}
	name := f.Name()
	werr := f.Close()
	if err := os.Remove(name); err != nil {
		return err
	}
	return werr
}

func describeMode(m fs.FileMode) string {
	if m.IsRegular() {
		return "regular file"
	}
	return fmt.Sprintf("file of type %s", m.Type())
}
