// Package backup takes backups of an etcd member and writes them to a snapstore.Store: full
// snapshots streamed from the member's backend (in-process) or its Maintenance API (an
// external member) on a cron schedule, and delta snapshots: every event from a watch,
// uploaded every period as one object covering a contiguous range of revisions.
package backup
