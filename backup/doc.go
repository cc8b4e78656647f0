// Package backup takes backups of an etcd member and writes them to a snapstore.Store: full
// snapshots, streamed from the member's backend (in-process) or from its Maintenance API (an
// external member), on a cron schedule.
package backup
