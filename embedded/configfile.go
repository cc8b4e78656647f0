package embedded

import (
	"fmt"
	"os"
	"strings"

	"sigs.k8s.io/yaml"

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

// configFromFile loads etcd's YAML config file with embed.ConfigFromFile (which
// also validates it), without letting it exit or panic the process.
func configFromFile(path string) (cfg *embed.Config, err error) {
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

	defer func() {
		if r := recover(); r != nil {
			cfg, err = nil, fmt.Errorf("etcd config file %q: invalid content: %v", path, r)
		}
	}()
	cfg, err = embed.ConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("etcd config file %q: %w", path, err)
	}
	return cfg, nil
}
