package embedded

import (
	"flag"
	"fmt"
	"io"
	"sync"

	"go.etcd.io/etcd/pkg/v3/flags"
	cconfig "go.etcd.io/etcd/server/v3/config"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/rafthttp"
)

// etcd's values for --discovery-fallback.
const (
	fallbackExit  = "exit"
	fallbackProxy = "proxy"
)

// ignoredFlags are flags etcd 3.6 still accepts and ignores (etcdmain's list).
var ignoredFlags = []string{
	"cluster-active-size",
	"cluster-remove-delay",
	"cluster-sync-interval",
	"config",
	"force",
	"max-result-buffer",
	"max-retry-attempts",
	"peer-heartbeat-interval",
	"peer-election-timeout",
	"retry-interval",
	"snapshot",
	"v",
	"vv",
	"test.coverprofile",
	"test.outputdir",
}

// deprecatedFlags are the flags etcd 3.6 warns about when they are set, with its
// warning text.
var deprecatedFlags = map[string]string{
	"max-snapshots":  "--max-snapshots is deprecated in 3.6 and will be decommissioned in 3.8.",
	"v2-deprecation": "--v2-deprecation is deprecated and scheduled for removal in v3.8. The default value is enforced, ignoring user input.",
	"experimental-compact-hash-check-enabled":           "--experimental-compact-hash-check-enabled is deprecated in 3.6 and will be decommissioned in 3.7. Use '--feature-gates=CompactHashCheck=true' instead.",
	"experimental-compact-hash-check-time":              "--experimental-compact-hash-check-time is deprecated in 3.6 and will be decommissioned in 3.7. Use '--compact-hash-check-time' instead.",
	"experimental-txn-mode-write-with-shared-buffer":    "--experimental-txn-mode-write-with-shared-buffer is deprecated in v3.6 and will be decommissioned in v3.7. Use '--feature-gates=TxnModeWriteWithSharedBuffer=true' instead.",
	"experimental-corrupt-check-time":                   "--experimental-corrupt-check-time is deprecated in v3.6 and will be decommissioned in v3.7. Use '--corrupt-check-time' instead.",
	"experimental-compaction-batch-limit":               "--experimental-compaction-batch-limit is deprecated in v3.6 and will be decommissioned in v3.7. Use '--compaction-batch-limit' instead.",
	"experimental-watch-progress-notify-interval":       "--experimental-watch-progress-notify-interval is deprecated in v3.6 and will be decommissioned in v3.7. Use '--watch-progress-notify-interval' instead.",
	"experimental-warning-apply-duration":               "--experimental-warning-apply-duration is deprecated in v3.6 and will be decommissioned in v3.7. Use '--warning-apply-duration' instead.",
	"experimental-bootstrap-defrag-threshold-megabytes": "--experimental-bootstrap-defrag-threshold-megabytes is deprecated in v3.6 and will be decommissioned in v3.7. Use '--bootstrap-defrag-threshold-megabytes' instead.",
	"experimental-memory-mlock":                         "--experimental-memory-mlock is deprecated in v3.6 and will be decommissioned in v3.7. Use '--memory-mlock' instead.",
	"experimental-snapshot-catchup-entries":             "--experimental-snapshot-catchup-entries is deprecated in v3.6 and will be decommissioned in v3.7. Use '--snapshot-catchup-entries' instead.",
	"experimental-compaction-sleep-interval":            "--experimental-compaction-sleep-interval is deprecated in v3.6 and will be decommissioned in v3.7. Use 'compaction-sleep-interval' instead.",
	"experimental-downgrade-check-time":                 "--experimental-downgrade-check-time is deprecated in v3.6 and will be decommissioned in v3.7. Use '--downgrade-check-time' instead.",
	"experimental-enable-distributed-tracing":           "--experimental-enable-distributed-tracing is deprecated in 3.6 and will be decommissioned in 3.7. Use --enable-distributed-tracing instead.",
	"experimental-distributed-tracing-address":          "--experimental-distributed-tracing-address is deprecated in 3.6 and will be decommissioned in 3.7. Use --distributed-tracing-address instead.",
	"experimental-distributed-tracing-service-name":     "--experimental-distributed-tracing-service-name is deprecated in 3.6 and will be decommissioned in 3.7. Use --distributed-tracing-service-name instead.",
	"experimental-distributed-tracing-instance-id":      "--experimental-distributed-tracing-instance-id is deprecated in 3.6 and will be decommissioned in 3.7. Use --distributed-tracing-instance-id instead.",
	"experimental-distributed-tracing-sampling-rate":    "--experimental-distributed-tracing-sampling-rate is deprecated in 3.6 and will be decommissioned in 3.7. Use --distributed-tracing-sampling-rate instead.",
}

// rafthttpMu serializes every use of embed.Config.AddFlags. AddFlags binds
// --raft-read-timeout and --raft-write-timeout straight to process-wide variables
// of etcd's rafthttp package (and writes their defaults into them when it is
// called); this lock is the only package-level state here and exists only to keep
// concurrent flag parsing from racing on etcd's globals.
var rafthttpMu sync.Mutex

// etcdFlagSet is etcd 3.6's command line: embed.Config.AddFlags plus what
// etcdmain registers itself.
type etcdFlagSet struct {
	fs            *flag.FlagSet
	cfg           *embed.Config
	configFile    string
	printVersion  bool
	clusterState  *flags.SelectiveStringValue
	fallback      *flags.SelectiveStringValue
	v2deprecation *flags.SelectiveStringsValue
}

// newEtcdFlagSet registers every flag the etcd 3.6 binary accepts on a fresh
// default configuration. The caller must hold rafthttpMu.
func newEtcdFlagSet() *etcdFlagSet {
	ef := &etcdFlagSet{
		fs:           flag.NewFlagSet("etcd", flag.ContinueOnError),
		cfg:          embed.NewConfig(),
		clusterState: flags.NewSelectiveStringValue(embed.ClusterStateFlagNew, embed.ClusterStateFlagExisting),
		fallback:     flags.NewSelectiveStringValue(fallbackExit, fallbackProxy),
		v2deprecation: flags.NewSelectiveStringsValue(
			string(cconfig.V2Depr1WriteOnly),
			string(cconfig.V2Depr1WriteOnlySkipCheck),
			string(cconfig.V2Depr1WriteOnlyDrop),
			string(cconfig.V2Depr2Gone)),
	}
	fs := ef.fs
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	ef.cfg.AddFlags(fs)
	fs.StringVar(&ef.configFile, "config-file", "", "Path to the server configuration file. Note that if a configuration file is provided, other command line flags and environment variables will be ignored.")
	fs.Var(ef.fallback, "discovery-fallback", fmt.Sprintf("Valid values include %q", ef.fallback.Valids()))
	fs.Var(ef.clusterState, "initial-cluster-state", "Initial cluster state ('new' when bootstrapping a new cluster or 'existing' when adding new members to an existing cluster). After successful initialization (bootstrapping or adding), flag is ignored on restarts.")
	fs.Var(ef.v2deprecation, "v2-deprecation", fmt.Sprintf("v2store deprecation stage: %q. Deprecated and scheduled for removal in v3.8. The default value is enforced, ignoring user input.", ef.v2deprecation.Valids()))
	fs.BoolVar(&ef.printVersion, "version", false, "Print the version and exit.")
	for _, name := range ignoredFlags {
		fs.Var(&flags.IgnoredFlag{Name: name}, name, "")
	}
	return ef
}

// Usage returns the usage text of etcd's flags: every flag the etcd 3.6 binary
// accepts, with its description and default. It has no side effects.
func Usage() string {
	rafthttpMu.Lock()
	defer rafthttpMu.Unlock()
	// AddFlags writes the rafthttp defaults into etcd's globals; put back
	// whatever an earlier ParseFlags set.
	readTimeout, writeTimeout := rafthttp.ConnReadTimeout, rafthttp.ConnWriteTimeout
	defer func() {
		rafthttp.ConnReadTimeout, rafthttp.ConnWriteTimeout = readTimeout, writeTimeout
	}()
	return newEtcdFlagSet().usage()
}
