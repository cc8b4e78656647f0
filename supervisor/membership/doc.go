// Package membership is a member's place in a cluster of several etcd members: how a member
// whose data dir is missing, corrupt or was removed from the cluster joins it again through
// etcd's learner path, how a member with no data dir avoids founding a second cluster, and
// how the leader's etcdbr looks after the learners (promotes them once caught up, removes
// those that make no progress).
//
// Each job is a pure decision over plain values, with table tests, and a driver that does
// the I/O through a narrow interface:
//
//	Decide         the next step of a member at start (Facts -> Step)
//	Join           runs Decide's steps against the cluster until etcd may start (Outcome)
//	Keeper.Look    the leader's next action on the learners (View -> Action)
//	Cluster        the cluster's client API as Join uses it; Client implements it over
//	               clientv3 and the cluster's client endpoints
//	DefaultEndpoints, InitialCluster, Matches   the pure helpers
//
// The package knows nothing of the store or of etcd in-process: the supervisor gathers the
// facts (the data dir's verdict, the store's cluster record), moves the data dir aside when
// told to, starts etcd with the Outcome, and runs the Keeper on the leader.
package membership
