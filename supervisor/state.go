package supervisor

// State is where the member is in its life:
//
//	Validating -> (Restoring) -> Starting -> Serving -> (Restoring -> Starting -> Serving)* -> Stopping
//
// A restore while running (a request, or a CORRUPT alarm with --restore-on-corrupt) goes
// from Serving through Restoring and Starting back to Serving, in the same process.
type State string

// The states.
const (
	// StateValidating: the data dir is being checked (and restored from the store at start
	// when it is missing or corrupt: the restore is part of this state).
	StateValidating State = "validating"
	// StateRestoring: a restore while running: backups and etcd are stopped, the data dir
	// is being rebuilt from the store.
	StateRestoring State = "restoring"
	// StateStarting: etcd is starting.
	StateStarting State = "starting"
	// StateServing: etcd serves clients; backups run (on the leader).
	StateServing State = "serving"
	// StateStopping: the process stops (a signal): the final delta is uploaded, etcd stops.
	StateStopping State = "stopping"
)

// States are all states, in lifecycle order.
var States = []State{StateValidating, StateRestoring, StateStarting, StateServing, StateStopping}

// RestorePhase is where a restore while running is.
type RestorePhase string

// The phases of a restore while running, in order, and its two ends.
const (
	// PhaseStoppingBackups: the full snapshot runner stops (a snapshot in flight is
	// abandoned) and the delta taker uploads its final delta.
	PhaseStoppingBackups RestorePhase = "stopping_backups"
	// PhaseStoppingEtcd: etcd stops.
	PhaseStoppingEtcd RestorePhase = "stopping_etcd"
	// PhaseRestoring: the data dir is rebuilt from the store (fetch, verify, replay,
	// swap; the old data dir is moved aside).
	PhaseRestoring RestorePhase = "restoring"
	// PhaseStartingEtcd: etcd starts on the new data dir (or on the old one when the
	// restore failed).
	PhaseStartingEtcd RestorePhase = "starting_etcd"
	// PhaseFullSnapshot: a fresh full snapshot of the restored member is taken; backups
	// resume after it.
	PhaseFullSnapshot RestorePhase = "full_snapshot"
	// PhaseSucceeded and PhaseFailed end a restore.
	PhaseSucceeded RestorePhase = "succeeded"
	PhaseFailed    RestorePhase = "failed"
)

// restorePhases are the phases a restore is in while it runs.
var restorePhases = []RestorePhase{PhaseStoppingBackups, PhaseStoppingEtcd, PhaseRestoring, PhaseStartingEtcd, PhaseFullSnapshot}

// The triggers of a restore while running.
const (
	// TriggerRequest: POST /v1/restore (or Supervisor.RequestRestore).
	TriggerRequest = "request"
	// TriggerCorrupt: etcd raised a CORRUPT alarm and --restore-on-corrupt is set.
	TriggerCorrupt = "corrupt"
	// TriggerCluster: a whole-cluster restore (etcdbr cluster restore), carried out by every
	// member.
	TriggerCluster = "cluster"
)

// The triggers of the other restores, as the restore marker and the store's history records
// name them.
const (
	// TriggerStart: a restore at start, of a missing, corrupt or stale data dir.
	TriggerStart = "start"
	// TriggerOffline: etcdbr restore.
	TriggerOffline = "offline"
)
