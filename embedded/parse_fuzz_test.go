package embedded

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fuzzSideEffects are the parts of etcd's configuration whose parsing reaches outside the
// process: log outputs (files are created), discovery (DNS lookups) and the config file's
// path (a fuzzer's path could name a device that never ends). FuzzEtcdConfig leaves inputs
// that name them out; the config file it gives itself.
var fuzzSideEffects = []string{"log-output", "log_output", "discovery", "config-file", "config_file"}

// FuzzEtcdConfig parses etcd's configuration as `etcdbr run -- <etcd flags>` does: the
// command line (args, one per line), ETCD_* variables (env, one KEY=value per line) and, with
// useFile, etcd's YAML config file (configYAML). No input panics or exits the process, and a
// configuration the parser accepts has a data dir and passes etcd's own validation again.
func FuzzEtcdConfig(f *testing.F) {
	f.Add("--name=node-1\n--data-dir=/var/lib/etcd\n--listen-client-urls=https://127.0.0.1:2379\n"+
		"--advertise-client-urls=https://127.0.0.1:2379\n--initial-advertise-peer-urls=https://127.0.0.1:2380\n"+
		"--listen-peer-urls=https://127.0.0.1:2380\n--initial-cluster=node-1=https://127.0.0.1:2380\n"+
		"--experimental-initial-corrupt-check=true\n--experimental-watch-progress-notify-interval=5s\n--snapshot-count=10000",
		"", "", false)
	f.Add("", "ETCD_NAME=a\nETCD_INITIAL_CLUSTER=a=http://localhost:2380\nETCD_QUOTA_BACKEND_BYTES=8589934592\nETCD_UNKNOWN=1",
		"", false)
	f.Add("--name=x", "ETCD_NAME=y", "", false)
	f.Add("--feature-gates=CompactHashCheck=true,StopGRPCServiceOnDefrag=true\n--auto-compaction-mode=revision\n--auto-compaction-retention=1000",
		"", "", false)
	f.Add("", "", "name: node-1\ndata-dir: /var/lib/etcd\nlisten-client-urls: http://127.0.0.1:2379\n"+
		"advertise-client-urls: http://127.0.0.1:2379\ninitial-cluster: node-1=http://localhost:2380\n"+
		"initial-cluster-state: new\nauto-compaction-retention: \"1\"\nclient-transport-security:\n  client-cert-auth: false\n", true)
	f.Add("--version", "", "", false)
	f.Add("--help", "", "", false)
	f.Add("--listen-client-urls=http://[::1", "", "listen-peer-urls: [1, 2]\n", true)
	f.Fuzz(func(t *testing.T, args, env, configYAML string, useFile bool) {
		for _, s := range fuzzSideEffects {
			if strings.Contains(strings.ToLower(args+env+configYAML), s) {
				return
			}
		}
		argv := strings.Split(args, "\n")
		if args == "" {
			argv = nil
		}
		environ := strings.Split(env, "\n")
		if useFile {
			path := filepath.Join(t.TempDir(), "etcd.yaml")
			if err := os.WriteFile(path, []byte(configYAML), 0o600); err != nil {
				t.Fatal(err)
			}
			argv = append(argv, "--config-file="+path)
		}
		rafthttpMu.Lock()
		defer rafthttpMu.Unlock()
		cfg, err := parseFlags(argv, environ, ParseOptions{Log: slog.DiscardHandler})
		if err != nil {
			return
		}
		if cfg.Dir == "" {
			t.Fatalf("accepted %q with %q without a data dir", argv, environ)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("accepted %q with %q, but etcd's validation refuses it: %v", argv, environ, err)
		}
	})
}
