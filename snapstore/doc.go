// Package snapstore is etcdbr's backup store: its I/O. It opens a store URL,
// lists the backup objects under its prefix, streams them in and out through
// the codec (zstd, age, sha256), reads and writes the store's records (the
// cluster record, restore locks, histories, damage records) and applies the
// garbage collection plan. The format is specified in docs/store-format.md.
//
// What is decided from the objects' names alone (the names themselves, the
// restore plan, the restorable window, retention and the garbage collection
// plan) is pure and lives in package snapstore/catalog, which this package
// imports and which imports nothing that does I/O.
//
// # Layout
//
// Everything lives under the store URL's prefix:
//
//	full/<rev>-<time>.db.zst[.age]
//	delta/<from>-<to>-<time>.delta.zst[.age]
//
// Revisions are zero-padded to 20 digits and <time> is UTC with millisecond
// precision (20060102T150405.000Z), so a name tells what an object holds
// and the lexical order of a listing is revision order. Any other key under
// the prefix (temporary files of uploads in progress, other tools' files)
// is ignored: catalog.ParseName rejects it.
//
// # Objects
//
// An object is the zstd-compressed payload followed by a trailer, a zstd
// skippable frame recording the payload's length and SHA-256, the whole
// optionally encrypted with age:
//
//	object = [age]( zstd(payload) || trailer )
//
// A plain zstd decoder skips the trailer, so `zstd -d` of an unencrypted
// object yields the payload. Writer streams the payload through the encoder
// and the upload with bounded memory; the object becomes visible only when
// Writer.Commit closes the upload, and Writer.Abort or a cancelled context
// discards it. Store.Open streams the payload back and verifies it against
// the trailer: corruption is an error wrapping ErrCorrupt that names the
// object.
//
// # Other tools' backups
//
// A Store can also read the backups of another tool (Layout, Detect): an etcd-backup-restore
// store, or one etcd snapshot file (etcdctl snapshot save, k3s, rke2). It lists their objects
// as catalog.Snapshot values and Open returns their payloads as etcdbr's (a full snapshot's is
// the db and its SHA-256; an etcd-backup-restore delta is converted to etcdbr's delta payload,
// format version 2, while it streams), so that restores, listings, verification and copies
// use them as they are. Such a store is read-only (ErrReadOnly): nothing is written, deleted
// or locked in it. Package snapstore/foreign knows their formats; docs/migrate.md says what
// they hold and lack.
//
// # Store URLs
//
// file:///dir (or a plain path) is a local directory; s3://bucket/prefix,
// gs://bucket/prefix and azblob://container/prefix are a bucket and a key
// prefix in it, with the query parameters of gocloud.dev's drivers;
// mem://prefix is an in-memory store for tests. See Open.
package snapstore
