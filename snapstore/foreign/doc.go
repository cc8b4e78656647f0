// Package foreign reads the backups other tools write, so that etcdbr can restore from them
// and convert them: the stores of etcd-backup-restore (object names of its v1 and v2 layouts,
// gzip, zlib and lzw compression, its JSON delta snapshots) and etcd snapshot files (etcdctl
// snapshot save, k3s and rke2 snapshots: the bbolt db, usually followed by its SHA-256).
//
// It knows formats only: it parses names and decodes streams. Listing and opening the objects
// is snapstore's (a Store opened on such a store presents its objects as etcdbr snapshots,
// read-only); the restore that uses them is the same as for etcdbr's own backups.
// docs/migrate.md says what each source holds and what etcdbr does about what it lacks.
package foreign
