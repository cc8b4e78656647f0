package membership

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
)

// DefaultEndpoints returns the client endpoints of the peers named in etcd's
// --initial-cluster (name=peerURL,...) other than self: each peer URL with its port 2380
// replaced by 2379, etcd's IANA ports (kubeadm's layout, and that of most StatefulSets). A
// peer URL on another port has no client endpoint that can be told from it: the error says
// to give --cluster-endpoints.
func DefaultEndpoints(initialCluster, self string) ([]string, error) {
	var out []string
	for _, part := range strings.Split(initialCluster, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, peer, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("--initial-cluster entry %q is not name=peer-url", part)
		}
		if name == self {
			continue
		}
		u, err := url.Parse(peer)
		if err != nil {
			return nil, fmt.Errorf("--initial-cluster: peer URL %q of %s: %w", peer, name, err)
		}
		if u.Port() != "2380" {
			return nil, fmt.Errorf("the client endpoint of peer %s cannot be told from its peer URL %s (only port 2380 maps to 2379): "+
				"give the cluster's client URLs with --cluster-endpoints (ETCDBR_CLUSTER_ENDPOINTS)", name, peer)
		}
		u.Host = net.JoinHostPort(u.Hostname(), "2379")
		if ep := u.String(); !slices.Contains(out, ep) {
			out = append(out, ep)
		}
	}
	return out, nil
}

// PeerEndpoints returns endpoints without those of this member (own: its advertised and
// listened client URLs), compared by scheme, host and port.
func PeerEndpoints(endpoints, own []string) []string {
	key := func(s string) string {
		u, err := url.Parse(s)
		if err != nil {
			return s
		}
		return u.Scheme + "://" + u.Host
	}
	mine := map[string]bool{}
	for _, o := range own {
		mine[key(o)] = true
	}
	var out []string
	for _, ep := range endpoints {
		if !mine[key(ep)] && !slices.Contains(out, ep) {
			out = append(out, ep)
		}
	}
	return out
}
