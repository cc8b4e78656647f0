package embedded

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap/zapcore"

	"github.com/etcdbr/etcdbr/internal/embeddedtest"
)

// parseWithOptions is ParseFlagsWith without the process's environment.
func parseWithOptions(args []string, opts ParseOptions) (*embed.Config, error) {
	rafthttpMu.Lock()
	defer rafthttpMu.Unlock()
	return parseFlags(args, nil, opts)
}

// jsonLines decodes every line of out, failing the test on a line that is not JSON.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for l := range strings.Lines(out) {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), "a line that is not JSON: %q", l)
		lines = append(lines, m)
	}
	return lines
}

// memberFlags places a member named m1 on free loopback ports.
func memberFlags(t *testing.T) []string {
	client, peer := embeddedtest.FreeURL(t, "http"), embeddedtest.FreeURL(t, "http")
	return []string{
		"--name=m1",
		"--listen-client-urls=" + client.String(), "--advertise-client-urls=" + client.String(),
		"--listen-peer-urls=" + peer.String(), "--initial-advertise-peer-urls=" + peer.String(),
		"--initial-cluster=m1=" + peer.String(),
	}
}

// TestLogToJSON: with ParseOptions.Log, etcd logs from the parsing to the stop through the
// handler: every line is the handler's JSON and carries component=etcd, etcd's fields are
// attributes, and a clean stop logs no error.
func TestLogToJSON(t *testing.T) {
	t.Parallel()
	var out embeddedtest.SyncBuffer
	h := slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})
	dataDir := filepath.Join(t.TempDir(), "data")
	cfg, err := parseWithOptions(memberFlags(t), ParseOptions{DataDir: dataDir, Log: h})
	require.NoError(t, err)
	assert.Equal(t, dataDir, cfg.Dir)

	ctx, cancel := context.WithTimeout(context.Background(), embeddedtest.StartTimeout)
	e, err := Start(ctx, cfg, slog.New(h))
	cancel()
	require.NoError(t, err)
	_, err = e.Client().Put(context.Background(), "k", "v")
	require.NoError(t, err)
	e.Close()

	seen := map[string]map[string]any{}
	for _, l := range jsonLines(t, out.String()) {
		msg, _ := l["msg"].(string)
		assert.NotEqual(t, "ERROR", l["level"], "an error on a clean start and stop: %v", l)
		assert.NotEqual(t, "DEBUG", l["level"], "etcd's default level is info: %v", l)
		if l["component"] == Component {
			seen[msg] = l
		}
	}
	assert.NotContains(t, seen, "'data-dir' was empty; using default", "the data dir was given")
	started := seen["starting an etcd server"]
	require.NotNil(t, started, "etcd's lines carry component=%s", Component)
	assert.Equal(t, "INFO", started["level"])
	assert.Equal(t, dataDir, started["data-dir"], "zap fields become attributes")
	assert.Contains(t, started["caller"], "embed/etcd.go:")
	assert.Contains(t, seen, "closed etcd server")
	assert.NotContains(t, seen, serveEndedMsg, "at debug level once the stop began")
	require.Contains(t, out.String(), `"msg":"etcd is ready"`, "etcdbr's own lines go to the same handler")
}

// etcd's --log-level filters etcd's lines, whatever the handler's level.
func TestLogToLevel(t *testing.T) {
	t.Parallel()
	for level, lowest := range map[string]zapcore.Level{"debug": zapcore.DebugLevel, "info": zapcore.InfoLevel, "warn": zapcore.WarnLevel, "error": zapcore.ErrorLevel} {
		var out embeddedtest.SyncBuffer
		h := slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})
		cfg, err := parseWithOptions(append(memberFlags(t), "--log-level="+level), ParseOptions{DataDir: t.TempDir(), Log: h})
		require.NoError(t, err)
		lg := cfg.GetLogger()
		for _, l := range []zapcore.Level{zapcore.DebugLevel, zapcore.InfoLevel, zapcore.WarnLevel, zapcore.ErrorLevel} {
			if ce := lg.Check(l, "probe "+l.String()); ce != nil {
				ce.Write()
			}
			assert.Equal(t, l >= lowest, strings.Contains(out.String(), "probe "+l.String()), "--log-level=%s, line at %s", level, l)
		}
		assert.Contains(t, out.String(), "component="+Component)
	}
}

// Without a data dir from anywhere, etcd's default and its warning stay (etcd's behaviour);
// with ParseOptions.DataDir the data dir is that one and nothing is warned.
func TestParseDataDirWarning(t *testing.T) {
	t.Parallel()
	const warning = "'data-dir' was empty; using default"
	for _, given := range []bool{false, true} {
		var out embeddedtest.SyncBuffer
		opts := ParseOptions{Log: slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})}
		if given {
			opts.DataDir = t.TempDir()
		}
		cfg, err := parseWithOptions(memberFlags(t), opts)
		require.NoError(t, err)
		if given {
			assert.Equal(t, opts.DataDir, cfg.Dir)
			assert.NotContains(t, out.String(), warning)
		} else {
			assert.Equal(t, "m1.etcd", cfg.Dir)
			assert.Contains(t, out.String(), warning)
		}
	}
}

// etcd's own data dir flag wins over ParseOptions.DataDir (the caller checks conflicts).
func TestParseDataDirFlag(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg, err := parseWithOptions(append(memberFlags(t), "--data-dir="+dir), ParseOptions{DataDir: "other"})
	require.NoError(t, err)
	assert.Equal(t, dir, cfg.Dir)
}

// --log-outputs naming a file keeps etcd's own logger: etcd writes there in its format.
func TestLogToOtherOutputs(t *testing.T) {
	t.Parallel()
	var out embeddedtest.SyncBuffer
	h := slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})
	file := filepath.Join(t.TempDir(), "etcd.log")
	cfg, err := parseWithOptions(append(memberFlags(t), "--log-outputs="+file), ParseOptions{DataDir: t.TempDir(), Log: h})
	require.NoError(t, err)
	cfg.GetLogger().Warn("probe")
	require.NoError(t, cfg.GetLogger().Sync())
	assert.Empty(t, out.String())
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	assert.Contains(t, string(b), `"msg":"probe"`)
}

// With etcd's config file, etcd logs through the handler from the start: the warnings of the
// validation embed.ConfigFromFile runs come through it too (etcd's own logger, which
// ConfigFromFile builds, says nothing), at the file's log level.
func TestLogToConfigFile(t *testing.T) {
	t.Parallel()
	const singlePort = "Running http and grpc server on single port. This is not recommended for production."
	for _, level := range []string{"", "warn", "error"} {
		t.Run("log-level "+level, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			file := filepath.Join(dir, "etcd.yaml")
			peer := embeddedtest.FreeURL(t, "http")
			yaml := fmt.Sprintf("name: m1\ndata-dir: %s\nlisten-peer-urls: %s\ninitial-advertise-peer-urls: %s\ninitial-cluster: m1=%s\n",
				filepath.Join(dir, "data"), peer.String(), peer.String(), peer.String())
			if level != "" {
				yaml += "log-level: " + level + "\n"
			}
			require.NoError(t, os.WriteFile(file, []byte(yaml), 0o600))
			var out embeddedtest.SyncBuffer
			h := slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})
			cfg, err := parseWithOptions([]string{"--config-file=" + file}, ParseOptions{Log: h})
			require.NoError(t, err)

			msgs := map[string]bool{}
			for _, l := range jsonLines(t, out.String()) {
				assert.Equal(t, Component, l["component"])
				msgs[l["msg"].(string)] = true
			}
			want := level
			if want == "" {
				want = "info"
			}
			assert.Equal(t, want, cfg.LogLevel, "the file's level, not the copy's")
			assert.Equal(t, level != "", cfg.FlagsExplicitlySet["log-level"])
			assert.Equal(t, want == "info", msgs["loaded server configuration, other configuration command line flags and environment variables will be ignored if provided"], "%s", out.String())
			assert.Equal(t, want != "error", msgs[singlePort], "the validation's warning, through the handler: %s", out.String())
		})
	}
}

// The configuration loaded with a handler is the one embed.ConfigFromFile loads from the
// file, but for the logger.
func TestConfigFileSameWithLog(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "etcd.yaml")
	peer, client := embeddedtest.FreeURL(t, "http"), embeddedtest.FreeURL(t, "http")
	yaml := fmt.Sprintf(`# kubeadm-like
name: m1
data-dir: %s
listen-peer-urls: %s
initial-advertise-peer-urls: %s
listen-client-urls: %s
advertise-client-urls: %s
initial-cluster: m1=%s
initial-cluster-state: new
snapshot-count: 10000
quota-backend-bytes: 8589934592
auto-compaction-retention: "1h"
heartbeat-interval: 250
election-timeout: 2500
feature-gates: StopGRPCServiceOnDefrag=true
experimental-initial-corrupt-check: true
log-level: warn
client-transport-security:
  client-cert-auth: false
  cert-file: ""
`, filepath.Join(dir, "data"), peer.String(), peer.String(), client.String(), client.String(), peer.String())
	require.NoError(t, os.WriteFile(file, []byte(yaml), 0o600))
	want, err := configFromFile(file, nil)
	require.NoError(t, err)
	got, err := configFromFile(file, slog.DiscardHandler)
	require.NoError(t, err)
	assert.Equal(t, want.Name, got.Name)
	assert.Equal(t, want.Dir, got.Dir)
	assert.Equal(t, want.ListenPeerUrls, got.ListenPeerUrls)
	assert.Equal(t, want.AdvertiseClientUrls, got.AdvertiseClientUrls)
	assert.Equal(t, want.InitialCluster, got.InitialCluster)
	assert.Equal(t, want.ClusterState, got.ClusterState)
	assert.Equal(t, want.SnapshotCount, got.SnapshotCount)
	assert.Equal(t, want.QuotaBackendBytes, got.QuotaBackendBytes)
	assert.Equal(t, want.AutoCompactionRetention, got.AutoCompactionRetention)
	assert.Equal(t, want.TickMs, got.TickMs)
	assert.Equal(t, want.LogLevel, got.LogLevel)
	assert.Equal(t, want.FlagsExplicitlySet, got.FlagsExplicitlySet)
	assert.Equal(t, want.ServerFeatureGate.String(), got.ServerFeatureGate.String())
	assert.Equal(t, want.ClientTLSInfo.ClientCertAuth, got.ClientTLSInfo.ClientCertAuth)
	matches, err := filepath.Glob(filepath.Join(os.TempDir(), "etcdbr-etcd-config-*.json"))
	require.NoError(t, err)
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err == nil && strings.Contains(string(b), filepath.Join(dir, "data")) {
			t.Errorf("the copy of the config file was left behind: %s", m)
		}
	}
}

// gRPC's logs go through etcd's logger, named grpc: all of them at etcd's debug level,
// errors only otherwise.
func TestGRPCLogger(t *testing.T) {
	t.Parallel()
	for _, level := range []string{"debug", "info", "warn", "error"} {
		var out embeddedtest.SyncBuffer
		h := slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})
		cfg, err := parseWithOptions(append(memberFlags(t), "--log-level="+level), ParseOptions{DataDir: t.TempDir(), Log: h})
		require.NoError(t, err)
		parsed := len(out.String()) // etcd's lines of the parsing
		gl := GRPCLogger(cfg)
		require.NotNil(t, gl)
		gl.Info("probe info")
		gl.Infof("probe %s", "infof")
		gl.Warning("probe warning")
		gl.Error("probe error")
		want := map[string]bool{
			"probe info":    level == "debug",
			"probe infof":   level == "debug",
			"probe warning": level == "debug",
			"probe error":   true,
		}
		got := map[string]bool{}
		for _, l := range jsonLines(t, out.String()[parsed:]) {
			got[l["msg"].(string)] = true
			assert.Equal(t, Component, l["component"], "%v", l)
			assert.Equal(t, "grpc", l["logger"], "%v", l)
		}
		for msg, w := range want {
			assert.Equal(t, w, got[msg], "--log-level=%s: %q", level, msg)
		}
		assert.Equal(t, level == "debug", gl.V(0), "gRPC's verbose lines at debug only (--log-level=%s)", level)
		assert.True(t, gl.V(2), "errors always")
	}
}
