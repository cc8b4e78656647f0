package embedded

import (
	"errors"
	"fmt"

	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.uber.org/zap"
)

// ClusterIDFor returns the ID of the cluster that a new member started with cfg
// creates, and that a restore with cfg (rebuild.BuildDataDir, etcdutl's snapshot
// restore) gives the data dir it builds, in etcd's hex form (as
// datadir.ReadIDs and etcdctl print it). etcd derives it from the initial cluster's members (each
// member's ID from its name's peer URLs and the cluster token) and the token
// (--initial-cluster, --initial-cluster-token; DNS discovery included): another
// peer URL or another token is another cluster. An existing data dir keeps the
// ID it was created with, whatever cfg says now.
//
// Discovery by URL or by v3 discovery endpoints is refused, as rebuild.BuildDataDir
// refuses it: the members are not known before the discovery.
func ClusterIDFor(cfg *embed.Config) (string, error) {
	if cfg.Durl != "" || len(cfg.DiscoveryCfg.Endpoints) > 0 {
		return "", errors.New("cluster ID of the etcd config: it bootstraps by discovery; the cluster ID is known only after it: give --initial-cluster")
	}
	if cfg.DNSCluster != "" && cfg.GetLogger() == nil {
		// SRV discovery logs through the config's logger, which Validate sets up.
		if err := cfg.Validate(); err != nil {
			return "", fmt.Errorf("cluster ID of the etcd config: invalid etcd configuration: %w", err)
		}
	}
	urlsmap, token, err := cfg.PeerURLsMapAndToken("etcd")
	if err != nil {
		return "", fmt.Errorf("cluster ID of the etcd config: initial cluster: %w", err)
	}
	// The restore passes the initial cluster as a string (rebuild's prepareRestore); parse it
	// back the same way, so that both see the same members.
	ics, err := types.NewURLsMap(urlsmap.String())
	if err != nil {
		return "", fmt.Errorf("cluster ID of the etcd config: initial cluster %q: %w", urlsmap.String(), err)
	}
	cl, err := membership.NewClusterFromURLsMap(zap.NewNop(), token, ics)
	if err != nil {
		return "", fmt.Errorf("cluster ID of the etcd config: %w", err)
	}
	return cl.ID().String(), nil
}
