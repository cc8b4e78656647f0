package supervisor

import (
	"testing"

	"github.com/etcdbr/etcdbr/snapstore"
)

func TestReplacedCluster(t *testing.T) {
	rec := snapstore.ClusterRecord{ClusterID: "c3", Previous: []snapstore.PreviousCluster{{ClusterID: "c2"}, {ClusterID: "c1"}}}
	for cluster, want := range map[string]bool{"c3": false, "c2": true, "c1": true, "other": false} {
		if got := replacedCluster(cluster, rec); got != want {
			t.Errorf("replacedCluster(%s) = %v, want %v", cluster, got, want)
		}
	}
	if replacedCluster("c1", snapstore.ClusterRecord{ClusterID: "c1"}) {
		t.Error("the store's own cluster taken for a replaced one")
	}
}
