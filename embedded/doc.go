// Package embedded runs etcd 3.6 in-process and looks after its data directory.
//
// Configuration: ParseFlags accepts etcd's own command line, ETCD_* environment
// variables and etcd's YAML config file, with etcd's rules (see its
// documentation for where those rules are stricter than one might expect: a
// setting given both as a flag and as an ETCD_* variable is refused, as etcd
// does; with a config file the other flags and variables are ignored).
//
// Running: Start runs etcd through go.etcd.io/etcd/server/v3/embed and waits until
// it serves; Close stops it and returns when its files are closed, so the same
// configuration can be started again in the same process.
//
// Data dir: Inspect tells whether etcd would start correctly from a data dir
// (missing, valid, corrupt, with the reason) without changing it; CheckWritable
// checks permissions; BuildDataDir turns a snapshot db into a member data dir
// with etcdutl's restore and swaps it in atomically, keeping the old one aside.
//
// Damaged files: etcd exits the process (zap Fatal) on a WAL it cannot read, and
// bbolt panics or faults on goroutines of its own on a damaged db. Neither can be
// recovered once started, so Inspect decides beforehand, reading the db through a
// bounds-checked walker of bbolt's page format before handing it to bbolt, and
// reading the WAL with etcd's decoder the way etcd's bootstrap does. Inspect and
// BuildDataDir never crash on a damaged file.
package embedded
