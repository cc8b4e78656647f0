// Package rebuild builds an etcd data dir from a full snapshot and the deltas
// after it, offline: BuildDataDir restores the snapshot db with etcdutl's
// restore into a staging dir beside the data dir, replays the deltas into the
// staged member's db (ReplayDeltas, which writes etcd's mvcc records straight
// into bbolt), bumps the revision when asked, writes the restore marker,
// fsyncs everything and swaps the staged dirs in, moving the old data dir
// aside (never deleting it); RecoverInterruptedRestore, at start, finishes or
// rolls back a swap a crash interrupted. BuildDataDir and ReplayDeltas never
// crash on a damaged db: the snapshot db is checked with internal/boltfmt's
// bounds-checked walk before bbolt opens it.
//
// Why a package of its own: this is etcdutl's snapshot restore
// (etcdutl/snapshot), not etcd running: it never starts a member and takes
// etcd's configuration as an *embed.Config, so it does not import package
// embedded. It writes the data dirs that embedded/datadir inspects and uses
// datadir for what a data dir holds (its lock, the restore marker, the names
// of the dirs moved aside); datadir never needs it, so the dependency runs one
// way.
package rebuild
