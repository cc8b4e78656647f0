package snapstore

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
)

// location is where a store URL points, resolved into what gocloud needs.
type location struct {
	// scheme is one of file, mem, s3, gs, azblob.
	scheme string
	// bucketURL is the URL handed to blob.OpenBucket: the bucket without the
	// prefix, with the query parameters meant for the driver.
	bucketURL string
	// prefix is the key prefix inside the bucket, "" or ending in "/".
	prefix string
	// localDir is the absolute directory of a file store, "" otherwise; query is the query of
	// its URL.
	localDir, query string
	// layout is the URL's layout= parameter (etcdbr's, not handed to the driver), "" when
	// it has none.
	layout Layout
}

// storeURLHelp is appended to errors about malformed store URLs.
const storeURLHelp = "use file:///dir, s3://bucket/prefix, gs://bucket/prefix or azblob://container/prefix"

// fileDefaults are the fileblob query parameters a file store gets unless its
// URL sets them: temporary files next to the final file, so that the commit
// is a rename inside one directory; no .attrs metadata sidecars, so that an
// object is exactly one file and its commit one rename; directories that
// only the owner can enter, since snapshots hold all of etcd's data.
var fileDefaults = map[string]string{
	"no_tmp_dir":    "true",
	"metadata":      "skip",
	"dir_file_mode": "0700",
}

// parseLocation resolves a store URL (or a plain local path) without any I/O
// other than reading the working directory for a relative path. Its errors
// never contain the URL: callers add the redacted one.
func parseLocation(raw string) (location, error) {
	if raw == "" {
		return location{}, fmt.Errorf("empty store URL: %s", storeURLHelp)
	}
	if isPlainPath(raw) {
		return localLocation(raw, "")
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return location{}, fmt.Errorf("invalid store URL: %w", err)
	}
	q := u.Query()
	for _, reserved := range []string{"prefix", "key"} {
		if q.Has(reserved) {
			return location{}, fmt.Errorf("query parameter %q is not supported: put the prefix in the URL's path, e.g. s3://bucket/some/prefix", reserved)
		}
	}
	var layout Layout
	if q.Has(layoutParam) {
		if layout, err = parseLayout(q.Get(layoutParam)); err != nil {
			return location{}, err
		}
		q.Del(layoutParam)
		u.RawQuery = q.Encode()
	}
	loc, err := parseURL(u, q)
	loc.layout = layout
	return loc, err
}

// parseURL resolves a store URL whose query is q (without etcdbr's own parameters).
func parseURL(u *url.URL, q url.Values) (location, error) {
	switch u.Scheme {
	case "file":
		return fileLocation(u)
	case "mem":
		prefix, err := cleanPrefix(u.Host + u.Path)
		if err != nil {
			return location{}, err
		}
		query := withDefaults(q, map[string]string{"nomd5": "true"})
		return location{scheme: "mem", bucketURL: "mem://?" + query, prefix: prefix}, nil
	case "s3", "gs", "azblob":
		if u.Host == "" {
			return location{}, fmt.Errorf("no bucket name in the store URL: use %s://bucket/prefix", u.Scheme)
		}
		if u.User != nil {
			return location{}, fmt.Errorf("credentials in a %s:// store URL are not supported: use the provider's environment variables or credential files", u.Scheme)
		}
		prefix, err := cleanPrefix(u.Path)
		if err != nil {
			return location{}, err
		}
		bucket := url.URL{Scheme: u.Scheme, Host: u.Host, RawQuery: u.RawQuery}
		return location{scheme: u.Scheme, bucketURL: bucket.String(), prefix: prefix}, nil
	default:
		return location{}, fmt.Errorf("unknown store scheme %q: %s", u.Scheme, storeURLHelp)
	}
}

// fileLocation resolves file URLs: file:///abs/dir, file://localhost/abs/dir,
// and relative forms file:rel/dir, file://./rel/dir and file://rel/dir.
func fileLocation(u *url.URL) (location, error) {
	var dir string
	switch {
	case u.Opaque != "":
		dir = u.Opaque
	case u.Host == "" || u.Host == "localhost":
		dir = u.Path
	case u.Host == ".":
		dir = "." + u.Path
	default:
		dir = u.Host + u.Path
	}
	if dir == "" {
		return location{}, errors.New("no directory in the file store URL: use file:///abs/dir or a plain path")
	}
	return localLocation(dir, u.RawQuery)
}

// isPlainPath reports whether a store URL is a plain local path: it has no
// "://" and is not of the form file:rel/dir.
func isPlainPath(raw string) bool {
	return !strings.Contains(raw, "://") && !strings.HasPrefix(raw, "file:")
}

// localLocation resolves a local directory, relative ones against the
// working directory.
func localLocation(dir, rawQuery string) (location, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return location{}, fmt.Errorf("resolve directory %q: %w", dir, err)
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return location{}, fmt.Errorf("invalid query in the store URL: %w", err)
	}
	bucket := url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: withDefaults(q, fileDefaults)}
	return location{scheme: "file", bucketURL: bucket.String(), localDir: abs, query: rawQuery}, nil
}

// withDefaults returns q encoded, with defaults added for absent keys.
func withDefaults(q url.Values, defaults map[string]string) string {
	out := url.Values{}
	for k, v := range q {
		out[k] = v
	}
	for k, v := range defaults {
		if !out.Has(k) {
			out.Set(k, v)
		}
	}
	return out.Encode()
}

// cleanPrefix turns a URL path into a key prefix: "" or "a/b/". Empty
// segments are dropped; "." and ".." are refused because object stores do
// not resolve them.
func cleanPrefix(p string) (string, error) {
	var segs []string
	for seg := range strings.SplitSeq(p, "/") {
		switch seg {
		case "":
			continue
		case ".", "..":
			return "", fmt.Errorf("prefix %q contains a %q segment: object stores do not resolve it", p, seg)
		}
		segs = append(segs, seg)
	}
	if len(segs) == 0 {
		return "", nil
	}
	return strings.Join(segs, "/") + "/", nil
}
