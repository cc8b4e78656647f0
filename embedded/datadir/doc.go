// Package datadir tells what an etcd data dir holds, without running etcd and
// without changing the dir: InspectWith gives a verdict (missing, valid,
// corrupt, or unknown when it could not tell) on whether etcd 3.6 would start
// correctly from it, and the revision it would serve; ReadIDs reads
// its cluster and member IDs; CheckWritable checks its permissions; InUse
// tells whether a running etcd holds its db. It owns the files etcdbr keeps
// in a data dir and beside it: the clean-stop marker (WriteCleanStopMarker),
// which lets a later inspection trust the dir quickly; the restore marker
// (RestoredMarker), which says what a restore built; and the old dirs
// restores move aside (AsideDir names them, OldDataDirs and PruneOldDataDirs
// list and prune them).
//
// Damaged files: etcd exits the process (zap Fatal) on a WAL it cannot read,
// and bbolt panics or faults on goroutines of its own on a damaged db. Neither
// can be recovered once started, so Inspect decides beforehand, reading the
// db through internal/boltfmt's bounds-checked walk of bbolt's page format
// before handing it to bbolt, and reading the WAL with etcd's decoder the way
// etcd's bootstrap does. Inspect never crashes on a damaged file.
//
// Why a package of its own: these are questions about files at rest, asked
// with etcd stopped (at start, before a restore, by etcdbr validate), as
// etcd's server/verify and server/storage/datadir ask them apart from
// server/embed. Running etcd (package embedded) and building a data dir
// (embedded/rebuild) both depend on the answers; the answers depend on
// neither, so this package imports neither, and rebuild uses it for the lock,
// the markers and the names of the dirs it moves aside.
package datadir
