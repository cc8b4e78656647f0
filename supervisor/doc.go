// Package supervisor runs etcdbr's long jobs over the packages that do the work (embedded,
// backup, snapstore): an etcd member's life (etcdbr run), the sidecar that backs up an
// external etcd (etcdbr snapshot), the offline restore (etcdbr restore) and the verification
// of a store (etcdbr verify). The CLI parses flags, builds a configuration and calls one
// entry point:
//
//	Run, New + Supervisor.Run   etcdbr run: validate -> restore -> start etcd -> back up -> stop
//	RunSidecar, SidecarSnapshot etcdbr snapshot, continuous or --once (sidecar.go)
//	RestoreOffline              etcdbr restore (offline.go)
//	SurveyStart, DecideStart    what start-up decides with, for run and etcdbr validate (start.go)
//	Verify                      etcdbr verify, and --deep (verify.go, verify_deep.go)
//
// Restore and RestoreNewestIntact (restore.go) rebuild a data dir from the store for all of
// them.
//
// A member's life is split by job into types, each of which documents on its struct who
// creates it, who starts and stops it and what each of its mutexes guards:
//
//	Supervisor   the lifecycle and the restores while running (supervisor.go, restore_live.go)
//	backups      the backup runners of one etcd, for run and the sidecar alike (backups.go);
//	             in a cluster the delta taker follows the leader, one per raft term, and every
//	             upload is fenced by the leadership it began under (deltas.go, leader.go); a
//	             membership change takes a full snapshot first (membership_full.go)
//	storeClaim   the claim of the store: its cluster record (claim.go)
//	health       what is known of etcd and the backups: newest objects, unbacked age (health.go)
//	cluster      what is known of etcd's cluster: roles, quorum, catching up (cluster.go; its
//	             prober and the clients of the other members: cluster_probe.go)
//	metrics      the Prometheus metrics (metrics.go)
//	apiServer    the HTTP API: handlers, authentication, Host guard, status page (api*.go)
//
// The readiness checks (ready.go) and the status (status.go) are functions of one view of
// them all (memberView).
//
// These types stay in one package rather than sub-packages: the API, the status and the
// readiness checks share the status types (Status, RestoreStatus, Check) and the errors that
// map to HTTP statuses with the lifecycle, and the CLI and the end-to-end tests name them as
// supervisor's; a sub-package would need a third package for them, or would import its
// parent. Unexported types with one job each and a documented lifecycle give the same
// separation without moving the exported names.
package supervisor
