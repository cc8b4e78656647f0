package embedded

import (
	"errors"
	"flag"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/features"
)

// parseWithEnv runs the parser with an explicit environment instead of the
// process's, so the table below does not depend on the machine.
func parseWithEnv(args []string, env ...string) (*embed.Config, error) {
	rafthttpMu.Lock()
	defer rafthttpMu.Unlock()
	return parseFlags(args, env, ParseOptions{})
}

func urls(t *testing.T, ss ...string) []url.URL {
	t.Helper()
	out := make([]url.URL, len(ss))
	for i, s := range ss {
		u, err := url.Parse(s)
		require.NoError(t, err)
		out[i] = *u
	}
	return out
}

func TestParseFlags(t *testing.T) {
	quiet := []string{"--log-level=error"}
	tests := []struct {
		name  string
		args  []string
		env   []string
		check func(t *testing.T, cfg *embed.Config)
	}{
		{
			name: "defaults are etcd's",
			check: func(t *testing.T, cfg *embed.Config) {
				assert.Equal(t, "default", cfg.Name)
				assert.Equal(t, "default.etcd", cfg.Dir)
				assert.Equal(t, urls(t, "http://localhost:2379"), cfg.ListenClientUrls)
				assert.Equal(t, urls(t, "http://localhost:2379"), cfg.AdvertiseClientUrls)
				assert.Equal(t, urls(t, "http://localhost:2380"), cfg.ListenPeerUrls)
				assert.Equal(t, urls(t, "http://localhost:2380"), cfg.AdvertisePeerUrls)
				assert.Empty(t, cfg.ListenMetricsUrls)
				assert.Equal(t, "default=http://localhost:2380", cfg.InitialCluster)
				assert.Equal(t, embed.ClusterStateFlagNew, cfg.ClusterState)
				assert.Equal(t, "etcd-cluster", cfg.InitialClusterToken)
				assert.Equal(t, uint64(10000), cfg.SnapshotCount)
				assert.Equal(t, embed.DefaultWarningUnaryRequestDuration, cfg.WarningUnaryRequestDuration)
				assert.False(t, cfg.ServerFeatureGate.Enabled(features.InitialCorruptCheck))
			},
		},
		{
			name: "flags",
			args: []string{"--name=n1", "--data-dir=/var/lib/x", "--wal-dir=/wal",
				"--listen-client-urls=http://127.0.0.1:12379,http://10.0.0.1:12379", "--advertise-client-urls=http://10.0.0.1:12379",
				"--initial-cluster-state=existing", "--snapshot-count=5", "--quota-backend-bytes=8589934592",
				"--auto-compaction-mode=periodic", "--auto-compaction-retention=1h", "--heartbeat-interval=50", "--election-timeout=500"},
			check: func(t *testing.T, cfg *embed.Config) {
				assert.Equal(t, "n1", cfg.Name)
				assert.Equal(t, "/var/lib/x", cfg.Dir)
				assert.Equal(t, "/wal", cfg.WalDir)
				assert.Equal(t, urls(t, "http://10.0.0.1:12379", "http://127.0.0.1:12379"), cfg.ListenClientUrls)
				assert.Equal(t, urls(t, "http://10.0.0.1:12379"), cfg.AdvertiseClientUrls)
				assert.Equal(t, embed.ClusterStateFlagExisting, cfg.ClusterState)
				assert.Equal(t, uint64(5), cfg.SnapshotCount)
				assert.Equal(t, int64(8<<30), cfg.QuotaBackendBytes)
				assert.Equal(t, "periodic", cfg.AutoCompactionMode)
				assert.Equal(t, "1h", cfg.AutoCompactionRetention)
				assert.Equal(t, uint(50), cfg.TickMs)
				assert.Equal(t, uint(500), cfg.ElectionMs)
				// etcd derives the initial cluster from --name when only the name is given.
				assert.Equal(t, "n1=http://localhost:2380", cfg.InitialCluster)
				assert.True(t, cfg.FlagsExplicitlySet["name"])
				assert.True(t, cfg.FlagsExplicitlySet["listen-client-urls"])
				assert.False(t, cfg.FlagsExplicitlySet["listen-peer-urls"])
			},
		},
		{
			name: "single-dash flags as Go's flag package accepts them",
			args: []string{"-name", "n2", "-data-dir", "d"},
			check: func(t *testing.T, cfg *embed.Config) {
				assert.Equal(t, "n2", cfg.Name)
				assert.Equal(t, "d", cfg.Dir)
			},
		},
		{
			name: "environment variables",
			env:  []string{"ETCD_NAME=from-env", "ETCD_SNAPSHOT_COUNT=7", "ETCD_LISTEN_METRICS_URLS=http://127.0.0.1:2381", "ETCD_VERSION=3.6.0", "ETCD_UNKNOWN_THING=1", "OTHER=x"},
			check: func(t *testing.T, cfg *embed.Config) {
				assert.Equal(t, "from-env", cfg.Name)
				assert.Equal(t, "from-env.etcd", cfg.Dir)
				assert.Equal(t, uint64(7), cfg.SnapshotCount)
				assert.Equal(t, urls(t, "http://127.0.0.1:2381"), cfg.ListenMetricsUrls)
				assert.True(t, cfg.FlagsExplicitlySet["name"], "a flag set from the environment counts as set, as in etcd")
				assert.False(t, cfg.FlagsExplicitlySet["version"])
			},
		},
		{
			name: "environment and flags for different settings combine",
			args: []string{"--name=flag"},
			env:  []string{"ETCD_DATA_DIR=/from/env"},
			check: func(t *testing.T, cfg *embed.Config) {
				assert.Equal(t, "flag", cfg.Name)
				assert.Equal(t, "/from/env", cfg.Dir)
			},
		},
		{
			name: "listen-metrics-urls",
			args: []string{"--listen-metrics-urls=http://127.0.0.1:2381,http://10.0.0.1:2381"},
			check: func(t *testing.T, cfg *embed.Config) {
				assert.Equal(t, urls(t, "http://10.0.0.1:2381", "http://127.0.0.1:2381"), cfg.ListenMetricsUrls)
			},
		},
		{
			name: "experimental flag turns its feature gate on",
			args: []string{"--experimental-initial-corrupt-check=true"},
			check: func(t *testing.T, cfg *embed.Config) {
				assert.True(t, cfg.ServerFeatureGate.Enabled(features.InitialCorruptCheck))
			},
		},
		{
			name: "experimental flag set to false turns a default-on gate off",
			args: []string{"--experimental-txn-mode-write-with-shared-buffer=false"},
			check: func(t *testing.T, cfg *embed.Config) {
				assert.False(t, cfg.ServerFeatureGate.Enabled(features.TxnModeWriteWithSharedBuffer))
			},
		},
		{
			name: "feature gate flag",
			args: []string{"--feature-gates=InitialCorruptCheck=true,CompactHashCheck=true"},
			check: func(t *testing.T, cfg *embed.Config) {
				assert.True(t, cfg.ServerFeatureGate.Enabled(features.InitialCorruptCheck))
				assert.True(t, cfg.ServerFeatureGate.Enabled(features.CompactHashCheck))
			},
		},
		{
			name: "experimental duration copied to its new field",
			args: []string{"--experimental-watch-progress-notify-interval=5s", "--experimental-compact-hash-check-time=2m"},
			check: func(t *testing.T, cfg *embed.Config) {
				assert.Equal(t, 5*time.Second, cfg.WatchProgressNotifyInterval)
				assert.Equal(t, 5*time.Second, cfg.ExperimentalWatchProgressNotifyInterval)
				assert.Equal(t, 2*time.Minute, cfg.CompactHashCheckTime)
			},
		},
		{
			name: "discovery drops the default initial cluster",
			args: []string{"--discovery-srv=example.com"},
			check: func(t *testing.T, cfg *embed.Config) {
				assert.Empty(t, cfg.InitialCluster)
				assert.Equal(t, "example.com", cfg.DNSCluster)
			},
		},
		{
			name: "ignored legacy flags are accepted",
			args: []string{"--peer-heartbeat-interval", "-v"},
			check: func(t *testing.T, cfg *embed.Config) {
				assert.Equal(t, "default", cfg.Name)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseWithEnv(append(append([]string{}, quiet...), tt.args...), tt.env...)
			require.NoError(t, err)
			tt.check(t, cfg)
		})
	}
}

func TestParseFlagsErrors(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     []string
		is      error
		message string // exact error text, when set
		contain []string
	}{
		{name: "--help", args: []string{"--help"}, is: ErrHelp},
		{name: "-h", args: []string{"-h"}, is: flag.ErrHelp},
		{name: "--version", args: []string{"--version"}, is: ErrVersion},
		{
			name:    "unknown flag",
			args:    []string{"--name=x", "--foo=bar"},
			is:      ErrUnknownFlag,
			message: "unknown etcd flag --foo: etcdbr passes everything after `--` to etcd; see etcd --help",
		},
		{
			name:    "positional argument",
			args:    []string{"--name=x", "extra"},
			contain: []string{`"extra" is not a valid etcd flag`},
		},
		{
			name:    "listen client URLs without advertise client URLs",
			args:    []string{"--listen-client-urls=http://127.0.0.1:2379"},
			is:      embed.ErrUnsetAdvertiseClientURLsFlag,
			contain: []string{"--advertise-client-urls"},
		},
		{
			name:    "bad flag value",
			args:    []string{"--snapshot-count=many"},
			contain: []string{"snapshot-count", "many"},
		},
		{
			name:    "bad environment value",
			env:     []string{"ETCD_SNAPSHOT_COUNT=many"},
			contain: []string{"ETCD_SNAPSHOT_COUNT", "many"},
		},
		{
			name:    "flag and environment variable for the same setting, as etcd refuses",
			args:    []string{"--name=flag"},
			env:     []string{"ETCD_NAME=env"},
			contain: []string{"ETCD_NAME", "--name"},
		},
		{
			name:    "experimental flag and its feature gate together",
			args:    []string{"--experimental-initial-corrupt-check=true", "--feature-gates=InitialCorruptCheck=true"},
			contain: []string{"cannot specify both flags"},
		},
		{
			name:    "old and new name of a renamed flag together",
			args:    []string{"--experimental-watch-progress-notify-interval=5s", "--watch-progress-notify-interval=6s"},
			contain: []string{"cannot set --experimental-watch-progress-notify-interval and --watch-progress-notify-interval"},
		},
		{
			name:    "v2 proxy fallback",
			args:    []string{"--discovery-fallback=proxy"},
			contain: []string{"v2 proxy"},
		},
		{
			name:    "invalid cluster state",
			args:    []string{"--initial-cluster-state=maybe"},
			contain: []string{"initial-cluster-state"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseWithEnv(append([]string{"--log-level=error"}, tt.args...), tt.env...)
			require.Error(t, err)
			assert.Nil(t, cfg)
			if tt.is != nil {
				assert.ErrorIs(t, err, tt.is)
			}
			if tt.message != "" {
				assert.EqualError(t, err, tt.message)
			}
			for _, s := range tt.contain {
				assert.Contains(t, err.Error(), s)
			}
		})
	}
}

// TestParseFlagsProcessEnvironment checks that ParseFlags reads the process's
// ETCD_* variables.
func TestParseFlagsProcessEnvironment(t *testing.T) {
	t.Setenv("ETCD_NAME", "env-name")
	t.Setenv("ETCD_LOG_LEVEL", "error")
	t.Setenv("ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK", "true")
	cfg, err := ParseFlags([]string{"--data-dir=/tmp/x"})
	require.NoError(t, err)
	assert.Equal(t, "env-name", cfg.Name)
	assert.Equal(t, "/tmp/x", cfg.Dir)
	assert.True(t, cfg.ServerFeatureGate.Enabled(features.InitialCorruptCheck))
	assert.Equal(t, "env-name=http://localhost:2380", cfg.InitialCluster)
}

func TestParseFlagsConfigFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "etcd.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`
name: from-file
data-dir: /var/lib/etcd-file
log-level: error
listen-client-urls: http://127.0.0.1:22379
advertise-client-urls: http://127.0.0.1:22379
listen-metrics-urls: http://127.0.0.1:22381
initial-cluster-state: existing
snapshot-count: 123
experimental-initial-corrupt-check: true
experimental-watch-progress-notify-interval: 5000000000
`), 0o600))

	check := func(t *testing.T, cfg *embed.Config) {
		t.Helper()
		assert.Equal(t, "from-file", cfg.Name)
		assert.Equal(t, "/var/lib/etcd-file", cfg.Dir)
		assert.Equal(t, urls(t, "http://127.0.0.1:22379"), cfg.ListenClientUrls)
		assert.Equal(t, urls(t, "http://127.0.0.1:22381"), cfg.ListenMetricsUrls)
		assert.Equal(t, embed.ClusterStateFlagExisting, cfg.ClusterState)
		assert.Equal(t, uint64(123), cfg.SnapshotCount)
		assert.True(t, cfg.ServerFeatureGate.Enabled(features.InitialCorruptCheck))
		assert.Equal(t, 5*time.Second, cfg.WatchProgressNotifyInterval)
		assert.True(t, cfg.FlagsExplicitlySet["snapshot-count"])
		assert.Equal(t, "from-file=http://localhost:2380", cfg.InitialCluster)
	}

	t.Run("flag", func(t *testing.T) {
		// As in etcd, the other flags and the environment are ignored.
		cfg, err := parseWithEnv([]string{"--config-file=" + path, "--name=ignored", "--snapshot-count=1"}, "ETCD_DATA_DIR=/ignored")
		require.NoError(t, err)
		check(t, cfg)
	})
	t.Run("environment", func(t *testing.T) {
		cfg, err := parseWithEnv(nil, "ETCD_CONFIG_FILE="+path, "ETCD_NAME=ignored")
		require.NoError(t, err)
		check(t, cfg)
	})
	t.Run("unknown flags are still refused", func(t *testing.T) {
		_, err := parseWithEnv([]string{"--config-file=" + path, "--nope"})
		require.ErrorIs(t, err, ErrUnknownFlag)
	})
	t.Run("missing file", func(t *testing.T) {
		_, err := parseWithEnv([]string{"--config-file=" + filepath.Join(dir, "missing.yaml")})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "missing.yaml")
	})
	t.Run("bad URL is an error, not an exit", func(t *testing.T) {
		bad := filepath.Join(dir, "bad.yaml")
		require.NoError(t, os.WriteFile(bad, []byte("log-level: error\nlisten-peer-urls: 'not a url'\n"), 0o600))
		_, err := parseWithEnv([]string{"--config-file=" + bad})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "listen-peer-urls")
	})
	t.Run("wrong type", func(t *testing.T) {
		bad := filepath.Join(dir, "type.yaml")
		require.NoError(t, os.WriteFile(bad, []byte("log-level: error\nexperimental-initial-corrupt-check: \"yes\"\n"), 0o600))
		_, err := parseWithEnv([]string{"--config-file=" + bad})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "type.yaml")
	})
}

func TestUsage(t *testing.T) {
	u := Usage()
	for _, want := range []string{"--data-dir", "--initial-cluster-state", "--config-file", "--listen-metrics-urls",
		"--experimental-initial-corrupt-check", "--feature-gates", "--version", "Path to the data directory."} {
		assert.Contains(t, u, want)
	}
	assert.NotContains(t, u, "--cluster-active-size", "ignored flags are not advertised")
	assert.Contains(t, Version(), "etcd Version: 3.6.")
	assert.True(t, errors.Is(ErrHelp, flag.ErrHelp))
}
