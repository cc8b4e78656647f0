package embedded

import (
	"flag"
	"fmt"
	"strings"
)

// helpSections are the sections of etcd 3.6's --help (etcdmain's flag list) in its order,
// each with its flags in its order, so that etcdbr's --help reads as etcd's does. The
// descriptions and defaults come from the flags themselves (embed.Config.AddFlags); a flag
// registered in no section is listed under "Other" at the end. cmd/etcdbr's
// TestEtcdHelpLikeEtcd compares the sections and their flags with etcd's own binary.
var helpSections = []struct {
	title string
	flags []string
}{
	{"Member", []string{
		"name", "data-dir", "wal-dir", "snapshot-count", "heartbeat-interval", "election-timeout",
		"initial-election-tick-advance", "listen-peer-urls", "listen-client-urls", "listen-client-http-urls",
		"max-snapshots", "max-wals", "memory-mlock", "quota-backend-bytes", "backend-bbolt-freelist-type",
		"backend-batch-interval", "backend-batch-limit", "max-txn-ops", "max-request-bytes",
		"max-concurrent-streams", "grpc-keepalive-min-time", "grpc-keepalive-interval", "grpc-keepalive-timeout",
		"socket-reuse-port", "socket-reuse-address", "enable-grpc-gateway", "raft-read-timeout",
		"raft-write-timeout", "feature-gates",
	}},
	{"Clustering", []string{
		"initial-advertise-peer-urls", "initial-cluster", "initial-cluster-state", "initial-cluster-token",
		"advertise-client-urls", "discovery", "discovery-token", "discovery-endpoints", "discovery-dial-timeout",
		"discovery-request-timeout", "discovery-keepalive-time", "discovery-keepalive-timeout",
		"discovery-insecure-transport", "discovery-insecure-skip-tls-verify", "discovery-cert", "discovery-key",
		"discovery-cacert", "discovery-user", "discovery-password", "discovery-fallback", "discovery-proxy",
		"discovery-srv", "discovery-srv-name", "strict-reconfig-check", "pre-vote", "auto-compaction-retention",
		"auto-compaction-mode", "v2-deprecation",
	}},
	{"Security", []string{
		"cert-file", "key-file", "client-cert-auth", "client-cert-file", "client-key-file", "client-crl-file",
		"client-cert-allowed-hostname", "trusted-ca-file", "auto-tls", "peer-cert-file", "peer-key-file",
		"peer-client-cert-auth", "peer-client-cert-file", "peer-client-key-file", "peer-trusted-ca-file",
		"peer-cert-allowed-cn", "peer-cert-allowed-hostname", "peer-auto-tls", "self-signed-cert-validity",
		"peer-crl-file", "cipher-suites", "cors", "host-whitelist", "tls-min-version", "tls-max-version",
	}},
	{"Auth", []string{
		"auth-token", "bcrypt-cost", "auth-token-ttl",
	}},
	{"Profiling and Monitoring", []string{
		"enable-pprof", "metrics", "listen-metrics-urls",
	}},
	{"Logging", []string{
		"logger", "log-outputs", "log-level", "log-format", "enable-log-rotation", "log-rotation-config-json",
		"warning-unary-request-duration",
	}},
	{"Experimental distributed tracing", []string{
		"experimental-enable-distributed-tracing", "enable-distributed-tracing",
		"experimental-distributed-tracing-address", "distributed-tracing-address",
		"experimental-distributed-tracing-service-name", "distributed-tracing-service-name",
		"experimental-distributed-tracing-instance-id", "distributed-tracing-instance-id",
		"experimental-distributed-tracing-sampling-rate", "distributed-tracing-sampling-rate",
	}},
	{"Experimental feature", []string{
		"experimental-initial-corrupt-check", "experimental-corrupt-check-time", "corrupt-check-time",
		"experimental-compact-hash-check-enabled", "experimental-compact-hash-check-time",
		"compact-hash-check-time", "experimental-enable-lease-checkpoint", "experimental-compaction-batch-limit",
		"compaction-batch-limit", "experimental-peer-skip-client-san-verification",
		"peer-skip-client-san-verification", "experimental-watch-progress-notify-interval",
		"watch-progress-notify-interval", "experimental-warning-apply-duration", "warning-apply-duration",
		"experimental-txn-mode-write-with-shared-buffer", "experimental-bootstrap-defrag-threshold-megabytes",
		"bootstrap-defrag-threshold-megabytes", "experimental-warning-unary-request-duration", "max-learners",
		"experimental-compaction-sleep-interval", "compaction-sleep-interval", "experimental-downgrade-check-time",
		"downgrade-check-time", "experimental-enable-lease-checkpoint-persist", "experimental-memory-mlock",
		"experimental-snapshot-catchup-entries", "snapshot-catchup-entries",
		"experimental-stop-grpc-service-on-defrag",
	}},
	{"Unsafe feature", []string{
		"force-new-cluster", "unsafe-no-fsync",
	}},
}

// usage writes etcd's help: how etcd is invoked, then every flag etcd 3.6 accepts (the
// ignored ones left out), by etcd's sections, each as etcd shows it: "--name 'default'",
// then its description indented below it.
func (ef *etcdFlagSet) usage() string {
	skip := make(map[string]bool, len(ignoredFlags))
	for _, name := range ignoredFlags {
		skip[name] = true
	}
	var b strings.Builder
	b.WriteString("Usage:\n\n")
	b.WriteString("  etcd [flags]\n    Start an etcd member with these flags; each can also be set as an ETCD_* environment\n" +
		"    variable (--initial-cluster-state as ETCD_INITIAL_CLUSTER_STATE).\n\n")
	b.WriteString("  etcd --version\n    Print etcd's version, then etcdbr's.\n\n")
	b.WriteString("  etcd -h | --help\n    Print this help.\n")
	entry := func(f *flag.Flag) {
		skip[f.Name] = true
		fmt.Fprintf(&b, "  --%s", f.Name)
		if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); !ok || !bf.IsBoolFlag() || f.DefValue == "true" {
			fmt.Fprintf(&b, " '%s'", f.DefValue)
		}
		fmt.Fprintf(&b, "\n    %s\n", strings.ReplaceAll(f.Usage, "\n", "\n    "))
	}
	for _, s := range helpSections {
		fmt.Fprintf(&b, "\n%s:\n", s.title)
		for _, name := range s.flags {
			if f := ef.fs.Lookup(name); f != nil && !skip[name] {
				entry(f)
			}
		}
	}
	var other []*flag.Flag
	ef.fs.VisitAll(func(f *flag.Flag) {
		if !skip[f.Name] {
			other = append(other, f)
		}
	})
	if len(other) > 0 {
		b.WriteString("\nOther:\n")
		for _, f := range other {
			entry(f)
		}
	}
	return b.String()
}
