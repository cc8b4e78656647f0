// Package embedded runs etcd 3.6 in-process, configured as etcd configures itself.
//
// Configuration: ParseFlags accepts etcd's own command line, ETCD_* environment
// variables and etcd's YAML config file, with etcd's rules (see its
// documentation for where those rules are stricter than one might expect: a
// setting given both as a flag and as an ETCD_* variable is refused, as etcd
// does; with a config file the other flags and variables are ignored).
// ClusterIDFor says which cluster a configuration creates.
//
// Running: Start runs etcd through go.etcd.io/etcd/server/v3/embed and waits until
// it serves; Close stops it and returns when its files are closed, so the same
// configuration can be started again in the same process. Events reads the
// running member's events from its backend.
//
// This package is etcd while it runs, and its configuration; what is done to a
// data dir with etcd stopped lives beside it, as etcd keeps the same jobs apart
// (server/embed here; server/verify and server/storage/datadir in
// embedded/datadir, which tells what a data dir holds and whether etcd would
// start from it; etcdutl/snapshot in embedded/rebuild, which builds a data dir
// from a snapshot and deltas). Those packages never start etcd and take its
// configuration as an *embed.Config, so they do not import this one: each can
// be read, tested and changed without the other two.
package embedded
