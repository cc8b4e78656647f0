// Package boltfmt reads bbolt's on-disk format (go.etcd.io/bbolt v1.4, format version 2) from a
// db's bytes, without bbolt: the meta page, the page header, branch and leaf elements, bucket
// headers (format.go), and Check, a bounds-checked walk of a whole file (check.go). It is the one
// place the page layout and its byte order are written down: the data dir inspection and the
// restore check a db with Check before bbolt opens it (bbolt faults or panics, on goroutines of
// its own, on a damaged file), and internal/dbrev's Scanner reads the revision out of a
// snapshot stream page by page with the same decoding. Wherever bbolt can be handed the file,
// bbolt reads it; this package is for the bytes it cannot be handed: a file not known to be
// sound yet, or a stream.
package boltfmt
