package embedded

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"sigs.k8s.io/yaml"

	"go.etcd.io/etcd/client/pkg/v3/logutil"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/embed"
)

// configFileURLKeys are the URL lists of etcd's YAML config file that
// embed.ConfigFromFile parses with os.Exit(1) on error; they are checked first.
var configFileURLKeys = []string{
	"listen-peer-urls",
	"listen-client-urls",
	"listen-client-http-urls",
	"initial-advertise-peer-urls",
	"advertise-client-urls",
	"listen-metrics-urls",
}

// quietLogLevel is the etcd log level at which embed.ConfigFromFile's own logger
// writes nothing: it validates the configuration, which logs warnings at most.
const quietLogLevel = "fatal"

// configFromFile loads etcd's YAML config file with embed.ConfigFromFile (which
// also validates it), without letting it exit or panic the process. When log is
// not nil etcd logs to it (LogTo) from the start: ConfigFromFile builds etcd's
// own logger, which cannot be replaced before it validates, so it is handed a
// copy of the file that differs in log-level alone (quietLogLevel), and the
// configuration is validated again, with the file's level, once LogTo set up
// etcd's logger. Without room for that copy in the temporary directory, the
// file itself is loaded, and etcd's logger writes what that validation says.
func configFromFile(path string, log slog.Handler) (cfg *embed.Config, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read etcd config file: %w", err)
	}
	var raw map[string]any
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("etcd config file %q: %w", path, err)
	}
	for _, key := range configFileURLKeys {
		v, ok := raw[key]
		if !ok || v == nil {
			continue
		}
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("etcd config file %q: %s must be a comma-separated string of URLs, got %T", path, key, v)
		}
		if s == "" {
			continue
		}
		if _, err := types.NewURLs(strings.Split(s, ",")); err != nil {
			return nil, fmt.Errorf("etcd config file %q: invalid %s: %w", path, key, err)
		}
	}
	level, levelSet := logutil.DefaultLogLevel, false
	if v, ok := raw["log-level"]; ok && v != nil {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("etcd config file %q: log-level must be a string (debug, info, warn, error, panic or fatal), got %T", path, v)
		}
		level, levelSet = s, true
	}

	load := path
	if log != nil {
		if quiet, err := quietCopy(b); err == nil {
			defer os.Remove(quiet)
			load = quiet
		}
	}
	defer func() {
		if r := recover(); r != nil {
			cfg, err = nil, fmt.Errorf("etcd config file %q: invalid content: %v", path, r)
		}
	}()
	cfg, err = embed.ConfigFromFile(load)
	if err != nil {
		return nil, fmt.Errorf("etcd config file %q: %w", path, err)
	}
	if log == nil {
		return cfg, nil
	}
	cfg.LogLevel = level
	if !levelSet {
		delete(cfg.FlagsExplicitlySet, "log-level")
	}
	cfg.ZapLoggerBuilder = nil // the logger of the copy's level
	LogTo(cfg, log)
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("etcd config file %q: %w", path, err)
	}
	return cfg, nil
}

// quietCopy writes the etcd config file b to a temporary file as JSON (which
// etcd's YAML parser reads as it reads b), with log-level set to quietLogLevel,
// and returns its path.
func quietCopy(b []byte) (path string, err error) {
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		return "", fmt.Errorf("etcd config file as JSON: %w", err)
	}
	var fields map[string]json.RawMessage // every value as written
	if err := json.Unmarshal(j, &fields); err != nil {
		return "", fmt.Errorf("etcd config file as JSON: %w", err)
	}
	if fields == nil {
		fields = map[string]json.RawMessage{}
	}
	fields["log-level"] = json.RawMessage(`"` + quietLogLevel + `"`)
	if j, err = json.Marshal(fields); err != nil {
		return "", fmt.Errorf("etcd config file as JSON: %w", err)
	}
	f, err := os.CreateTemp("", "etcdbr-etcd-config-*.json")
	if err != nil {
		return "", fmt.Errorf("copy of the etcd config file: %w", err)
	}
	_, werr := f.Write(j)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		_ = os.Remove(f.Name())
		return "", fmt.Errorf("copy of the etcd config file: %w", werr)
	}
	return f.Name(), nil
}
