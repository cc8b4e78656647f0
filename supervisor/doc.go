// Package supervisor owns an etcd member's life: it validates the data dir, restores it from
// the store when it is missing or corrupt, starts etcd in-process, takes backups while etcd
// serves, and stops cleanly.
package supervisor
