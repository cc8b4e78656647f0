package snapstore

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

func TestParseLocation(t *testing.T) {
	wd, err := os.Getwd()
	require.NoError(t, err)
	const fileQuery = "?dir_file_mode=0700&metadata=skip&no_tmp_dir=true"
	tests := []struct {
		url  string
		want location
	}{
		{"s3://bucket/some/prefix?region=eu-west-1", location{scheme: "s3", bucketURL: "s3://bucket?region=eu-west-1", prefix: "some/prefix/"}},
		{"s3://bucket/some//prefix/?region=eu-west-1&endpoint=http%3A%2F%2Flocalhost%3A9000", location{scheme: "s3", bucketURL: "s3://bucket?region=eu-west-1&endpoint=http%3A%2F%2Flocalhost%3A9000", prefix: "some/prefix/"}},
		{"s3://bucket", location{scheme: "s3", bucketURL: "s3://bucket", prefix: ""}},
		{"s3://bucket/", location{scheme: "s3", bucketURL: "s3://bucket", prefix: ""}},
		{"gs://bucket/x", location{scheme: "gs", bucketURL: "gs://bucket", prefix: "x/"}},
		{"azblob://container/x/y?storage_account=acct", location{scheme: "azblob", bucketURL: "azblob://container?storage_account=acct", prefix: "x/y/"}},
		{"mem://", location{scheme: "mem", bucketURL: "mem://?nomd5=true"}},
		{"mem://a/b", location{scheme: "mem", bucketURL: "mem://?nomd5=true", prefix: "a/b/"}},
		{"file:///var/backups/etcd", location{scheme: "file", bucketURL: "file:///var/backups/etcd" + fileQuery, localDir: "/var/backups/etcd"}},
		{"file://localhost/var/backups/etcd/", location{scheme: "file", bucketURL: "file:///var/backups/etcd" + fileQuery, localDir: "/var/backups/etcd"}},
		{"file:///var/backups/with%20space", location{scheme: "file", bucketURL: "file:///var/backups/with%20space" + fileQuery, localDir: "/var/backups/with space"}},
		{"file:///b?metadata=", location{scheme: "file", bucketURL: "file:///b?dir_file_mode=0700&metadata=&no_tmp_dir=true", localDir: "/b", query: "metadata="}},
		{"file:///b?layout=etcd-backup-restore", location{scheme: "file", bucketURL: "file:///b" + fileQuery, localDir: "/b", layout: LayoutEtcdBackupRestore}},
		{"s3://bucket/x/v2?region=r&layout=etcd-backup-restore", location{scheme: "s3", bucketURL: "s3://bucket?region=r", prefix: "x/v2/", layout: LayoutEtcdBackupRestore}},
		{"file://./rel/dir", location{scheme: "file", bucketURL: "file://" + filepath.Join(wd, "rel/dir") + fileQuery, localDir: filepath.Join(wd, "rel/dir")}},
		{"file://rel/dir", location{scheme: "file", bucketURL: "file://" + filepath.Join(wd, "rel/dir") + fileQuery, localDir: filepath.Join(wd, "rel/dir")}},
		{"file:rel/dir", location{scheme: "file", bucketURL: "file://" + filepath.Join(wd, "rel/dir") + fileQuery, localDir: filepath.Join(wd, "rel/dir")}},
		{"rel/dir", location{scheme: "file", bucketURL: "file://" + filepath.Join(wd, "rel/dir") + fileQuery, localDir: filepath.Join(wd, "rel/dir")}},
		{"/abs/dir", location{scheme: "file", bucketURL: "file:///abs/dir" + fileQuery, localDir: "/abs/dir"}},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			got, err := parseLocation(tt.url)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestParseLocationErrors(t *testing.T) {
	tests := []struct {
		url, want string
	}{
		{"", "empty store URL"},
		{"ftp://x", `unknown store scheme "ftp": use file:///dir, s3://bucket/prefix`},
		{"s3:///prefix", "no bucket name in the store URL: use s3://bucket/prefix"},
		{"s3://bucket/a?prefix=b", `query parameter "prefix" is not supported`},
		{"gs://bucket/../x", `contains a ".." segment`},
		{"s3://user:pw@bucket/x", "credentials in a s3:// store URL are not supported"},
		{"file://", "no directory in the file store URL"},
		{"s3://bucket/%zz", "invalid store URL"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			_, err := parseLocation(tt.url)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	_, err := Open(ctx, "ftp://x", Options{})
	require.Error(t, err)
	assert.Equal(t, `open store "ftp://x": unknown store scheme "ftp": use file:///dir, s3://bucket/prefix, gs://bucket/prefix or azblob://container/prefix`, err.Error())

	// The URL in errors is redacted.
	_, err = Open(ctx, "s3://bucket/x?region=r&bogus=1&secret_access_key=hunter2", Options{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "secret_access_key=xxxxx")
	assert.NotContains(t, err.Error(), "hunter2")

	// gocloud's error quotes the URL: secrets in it are scrubbed too.
	_, err = Open(ctx, "s3://bucket/x?bogus=1&endpoint=http%3A%2F%2Fminio%3Apw1234%40host", Options{})
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "pw1234")

	// Azure needs an account.
	t.Setenv("AZURE_STORAGE_ACCOUNT", "")
	_, err = Open(ctx, "azblob://container/x", Options{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "set AZURE_STORAGE_ACCOUNT or add ?storage_account=NAME")

	// A bad fileblob parameter is reported with the URL.
	_, err = Open(ctx, "file://"+t.TempDir()+"?bogus=1", Options{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `invalid query parameter "bogus"`)

	// A file where the directory should be.
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	_, err = Open(ctx, file, Options{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), file)
}

// With MustExist a missing directory is "no such store", and nothing is created; an existing
// (empty) one opens as an empty store.
func TestOpenMustExist(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	missing := filepath.Join(base, "typo", "store")
	for _, url := range []string{"file://" + missing, missing} {
		_, err := Open(ctx, url, Options{MustExist: true})
		require.Error(t, err)
		assert.ErrorIs(t, err, ErrNoStore)
		assert.Contains(t, err.Error(), missing+" does not exist")
		_, statErr := os.Stat(filepath.Join(base, "typo"))
		assert.ErrorIs(t, statErr, os.ErrNotExist, "MustExist created a directory")
	}

	// A file is read as an etcd snapshot file (LayoutSnapshot): one that is none is refused
	// when it is read.
	file := filepath.Join(base, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	fs, err := Open(ctx, "file://"+file, Options{MustExist: true})
	require.NoError(t, err)
	defer fs.Close()
	assert.Equal(t, LayoutSnapshot, fs.Layout())
	_, err = fs.ListBackups(ctx)
	assert.ErrorContains(t, err, "not an etcd snapshot")
	_, err = Open(ctx, "file://"+file, Options{})
	assert.ErrorContains(t, err, "not a directory", "a file is no store to write into")

	empty := filepath.Join(base, "empty")
	require.NoError(t, os.Mkdir(empty, 0o700))
	s, err := Open(ctx, "file://"+empty, Options{MustExist: true})
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Check(ctx))
	fulls, err := s.List(ctx, catalog.KindFull)
	require.NoError(t, err)
	assert.Empty(t, fulls)
}

func TestOpenCreatesDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	s, err := Open(context.Background(), "file://"+dir, Options{})
	require.NoError(t, err)
	defer s.Close()
	info, err := os.Stat(dir)
	require.NoError(t, err)
	assert.True(t, info.IsDir())
	assert.Equal(t, os.FileMode(0o700), info.Mode().Perm())
	assert.Equal(t, "file://"+dir, s.URL())
	require.NoError(t, s.Check(context.Background()))

	// Directories and objects are private to the owner.
	snap := writeObject(t, s, catalog.Snapshot{Kind: catalog.KindDelta, From: 1, Revision: 2, Time: testTime}, []byte("x"))
	info, err = os.Stat(filepath.Join(dir, "delta"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), info.Mode().Perm())
	info, err = os.Stat(filepath.Join(dir, filepath.FromSlash(snap.Key)))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())
}

func TestOpenRelativePath(t *testing.T) {
	base := t.TempDir()
	t.Chdir(base)
	ctx := context.Background()
	for url, dir := range map[string]string{
		"plain/dir":        "plain/dir",
		"file:other/dir":   "other/dir",
		"file://./dot/dir": "dot/dir",
	} {
		s, err := Open(ctx, url, Options{})
		require.NoError(t, err, url)
		assert.Equal(t, url, s.URL())
		snap := writeObject(t, s, catalog.Snapshot{Kind: catalog.KindFull, Revision: 3, Time: testTime}, []byte("hello"))
		require.NoError(t, s.Close())
		_, err = os.Stat(filepath.Join(base, dir, filepath.FromSlash(snap.Key)))
		require.NoError(t, err, url)
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"s3://bucket/x?region=eu-west-1", "s3://bucket/x?region=eu-west-1"},
		{"file:///var/backups/etcd", "file:///var/backups/etcd"},
		{"s3://bucket/x?region=r&endpoint=http%3A%2F%2Fminio%3Asecret%40host%3A9000", "s3://bucket/x?region=r&endpoint=http%3A%2F%2Fminio%3Axxxxx%40host%3A9000"},
		{"s3://bucket/x?endpoint=http://minio:pw@host:9000&region=r", "s3://bucket/x?endpoint=http%3A%2F%2Fminio%3Axxxxx%40host%3A9000&region=r"},
		{"s3://user:pw@bucket/x", "s3://user:xxxxx@bucket/x"},
		{"s3://user@bucket/x", "s3://user@bucket/x"},
		{"azblob://c/x?sig=abc&sv=2020&se=2030", "azblob://c/x?sig=xxxxx&sv=2020&se=2030"},
		{"s3://b/x?aws_secret_access_key=k&session_token=t&kmskeyid=id", "s3://b/x?aws_secret_access_key=xxxxx&session_token=xxxxx&kmskeyid=id"},
		{"gs://b/x?private_key_path=/k.pem&access_id=me", "gs://b/x?private_key_path=/k.pem&access_id=me"},
		{"s3://b/x?flag&password=p", "s3://b/x?flag&password=xxxxx"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, redactURL(tt.in), tt.in)
	}
}
