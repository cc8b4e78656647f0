package membership

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// The members of the tables: this member is m3 at peer URL p3.
var (
	self   = Self{Name: "m3", PeerURLs: []string{"http://p3:2380"}}
	m1     = Member{ID: 1, Name: "m1", PeerURLs: []string{"http://p1:2380"}, ClientURLs: []string{"http://p1:2379"}}
	m2     = Member{ID: 2, Name: "m2", PeerURLs: []string{"http://p2:2380"}, ClientURLs: []string{"http://p2:2379"}}
	m3     = Member{ID: 3, Name: "m3", PeerURLs: []string{"http://p3:2380"}, ClientURLs: []string{"http://p3:2379"}}
	m3Unst = Member{ID: 33, PeerURLs: []string{"http://p3:2380"}, IsLearner: true}
	m4Lrn  = Member{ID: 4, Name: "m4", PeerURLs: []string{"http://p4:2380"}, ClientURLs: []string{"http://p4:2379"}, IsLearner: true}
)

func TestDecide(t *testing.T) {
	t.Parallel()
	quorum := func(ms ...Member) Facts {
		return Facts{Self: self, Peers: 2, Answered: 2, Formed: true, Quorum: true, Members: ms, ClusterID: 100}
	}
	with := func(f Facts, edit func(*Facts)) Facts { edit(&f); return f }
	tests := []struct {
		name   string
		facts  Facts
		want   StepKind
		id     uint64
		reason []string
	}{
		// A valid data dir.
		{"valid, no peer answers", Facts{Self: self, Data: DataValid, DataMember: 3, Peers: 2}, StepStart, 0, []string{"none of the 2 peers"}},
		{"valid, peers without quorum", Facts{Self: self, Data: DataValid, DataMember: 3, Peers: 2, Answered: 1, Formed: true}, StepStart, 0, []string{"without a leader"}},
		{"valid, member in the cluster", with(quorum(m1, m2, m3), func(f *Facts) { f.Data, f.DataMember, f.DataCluster = DataValid, 3, 100 }), StepStart, 0, []string{"in the cluster"}},
		{"valid, member is a learner", with(quorum(m1, m2, Member{ID: 3, Name: "m3", PeerURLs: m3.PeerURLs, IsLearner: true}), func(f *Facts) { f.Data, f.DataMember = DataValid, 3 }), StepStart, 0, nil},
		{"valid, member removed", with(quorum(m1, m2), func(f *Facts) { f.Data, f.DataMember = DataValid, 3 }), StepMoveAside, 0, []string{"was removed", "moved aside (kept)", "learner"}},
		{"valid, peers of another cluster", with(quorum(m1, m2, m3), func(f *Facts) { f.Data, f.DataMember, f.DataCluster = DataValid, 3, 99 }), StepStop, 0,
			[]string{"cluster 63", "cluster 64", "--cluster-endpoints", "nothing was changed"}},
		{"peers of another cluster than the store's", with(quorum(m1, m2, m3), func(f *Facts) { f.StoreCluster = 99 }), StepStop, 0,
			[]string{"cluster 64", "records cluster 63", "--cluster-endpoints and --store"}},
		{"peers of the store's cluster", with(quorum(m1, m2, m3), func(f *Facts) { f.StoreCluster = 100 }), StepRemove, 3, nil},
		// A corrupt data dir.
		{"corrupt, no quorum", Facts{Self: self, Data: DataCorrupt, Peers: 2, Answered: 1, Formed: true}, StepWait, 0, []string{"corrupt", "untouched", "back in time"}},
		{"corrupt, quorum", with(quorum(m1, m2, m3), func(f *Facts) { f.Data = DataCorrupt }), StepMoveAside, 0, []string{"corrupt", "moved aside (kept)"}},
		// No data dir, no quorum: never a second cluster.
		{"missing, nobody answers, new cluster", Facts{Self: self, Peers: 2, New: true}, StepBootstrap, 0, []string{"founds the cluster"}},
		{"missing, nobody answers, the store records the cluster", Facts{Self: self, Peers: 2, New: true, StoreCluster: 100, ConfigCluster: 100}, StepWait, 0, []string{"store records this cluster", "never founds another"}},
		{"missing, nobody answers, the store records another cluster", Facts{Self: self, Peers: 2, New: true, StoreCluster: 99, ConfigCluster: 100}, StepWait, 0,
			[]string{"records cluster 63", "would found cluster 64", "store of its own"}},
		{"missing, nobody answers, the store cannot be read", Facts{Self: self, Peers: 2, New: true, StoreErr: "no route"}, StepWait, 0, []string{"cannot be read (no route)", "founds none"}},
		{"missing, peers bootstrapping too", Facts{Self: self, Peers: 2, Answered: 1, New: true}, StepBootstrap, 0, nil},
		{"missing, peers served as a cluster, no quorum", Facts{Self: self, Peers: 2, Answered: 1, Formed: true, New: true}, StepWait, 0, []string{"served as a cluster", "never founds another"}},
		{"missing, peers refuse the client", Facts{Self: self, Peers: 2, Refused: 1, New: true, PeerErrors: []string{"tls: bad certificate"}}, StepWait, 0, []string{"refuse", "bad certificate", "--cluster-cert"}},
		{"missing, existing, nobody answers", Facts{Self: self, Peers: 2}, StepWait, 0, []string{"existing"}},
		// No data dir, a quorum: the learner path.
		{"missing, stale entry of this member", quorum(m1, m2, m3), StepRemove, 3, []string{"stale", "m3 (3)"}},
		{"missing, renamed stale entry at this member's URL", quorum(m1, m2, Member{ID: 7, Name: "old", PeerURLs: m3.PeerURLs, ClientURLs: m3.ClientURLs}), StepRemove, 7, nil},
		{"missing, an entry with this member's name elsewhere is not this member's", quorum(m1, m2, Member{ID: 8, Name: "m3", PeerURLs: []string{"http://elsewhere:2380"}, ClientURLs: []string{"http://elsewhere:2379"}}),
			StepAddLearner, 0, nil},
		{"missing, no entry", quorum(m1, m2), StepAddLearner, 0, []string{"added as a learner"}},
		{"missing, another learner", quorum(m1, m2, m4Lrn), StepWait, 0, []string{"m4 (4) is a learner", "one learner at a time"}},
		{"missing, unstarted entry of this member", quorum(m1, m2, m3Unst), StepJoin, 33, []string{"unstarted entry"}},
		{"missing, unstarted voter of this member (kubeadm, a slow founder)", quorum(m1, m2, Member{ID: 34, PeerURLs: m3.PeerURLs}), StepJoin, 34, nil},
		{"missing, unstarted entry and another learner", quorum(m1, m2, m3Unst, Member{ID: 5, PeerURLs: []string{"http://p5:2380"}, IsLearner: true}), StepJoin, 33, nil},
		{"missing, unstarted entry with other URLs too", quorum(m1, m2, Member{ID: 35, PeerURLs: []string{"http://p3:2380", "http://other:2380"}, IsLearner: true}), StepRemove, 35, []string{"not this member's"}},
		{"missing, stale and unstarted entries", quorum(m1, m2, m3Unst, Member{ID: 9, Name: "m3", PeerURLs: m3.PeerURLs, ClientURLs: m3.ClientURLs}), StepRemove, 9, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := Decide(tt.facts)
			assert.Equal(t, tt.want.String(), got.Kind.String(), got.Reason)
			assert.Equal(t, tt.id, got.ID, got.Reason)
			for _, r := range tt.reason {
				assert.Contains(t, got.Reason, r)
			}
		})
	}
}

func TestInitialCluster(t *testing.T) {
	t.Parallel()
	got := InitialCluster([]Member{m2, m1, m3Unst, {ID: 0x2a, PeerURLs: []string{"http://p6:2380", "http://p6b:2380"}}}, self, 33)
	assert.Equal(t, "m1=http://p1:2380,m2=http://p2:2380,m3=http://p3:2380,unstarted-2a=http://p6:2380,unstarted-2a=http://p6b:2380", got)
}

func TestDefaultEndpoints(t *testing.T) {
	t.Parallel()
	eps, err := DefaultEndpoints("cp-1=https://10.0.0.10:2380,cp-2=https://10.0.0.11:2380,cp-3=https://10.0.0.12:2380", "cp-3")
	assert.NoError(t, err)
	assert.Equal(t, []string{"https://10.0.0.10:2379", "https://10.0.0.11:2379"}, eps)

	eps, err = DefaultEndpoints("etcd-0=https://etcd-0.etcd.ns.svc:2380,etcd-1=https://etcd-1.etcd.ns.svc:2380", "etcd-1")
	assert.NoError(t, err)
	assert.Equal(t, []string{"https://etcd-0.etcd.ns.svc:2379"}, eps)

	_, err = DefaultEndpoints("a=http://127.0.0.1:12380,b=http://127.0.0.1:12381", "a")
	assert.ErrorContains(t, err, "--cluster-endpoints")
	assert.ErrorContains(t, err, "12381")

	eps, err = DefaultEndpoints("a=http://127.0.0.1:12380", "a")
	assert.NoError(t, err)
	assert.Empty(t, eps)
}

func TestPeerEndpoints(t *testing.T) {
	t.Parallel()
	got := PeerEndpoints([]string{"https://10.0.0.10:2379", "https://10.0.0.11:2379/", "https://10.0.0.12:2379", "https://10.0.0.11:2379/"},
		[]string{"https://127.0.0.1:2379", "https://10.0.0.12:2379"})
	assert.Equal(t, []string{"https://10.0.0.10:2379", "https://10.0.0.11:2379/"}, got)
}
