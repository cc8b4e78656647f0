//go:build soak

package catalog_test

import (
	"testing"
	"time"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// A year of each of the other configurations (make soak; about 8 minutes on 2 cores).
func TestRetentionSimulatedYears(t *testing.T) {
	for name, p := range map[string]catalog.Policy{
		"exponential New York 3h": {Kind: catalog.PolicyExponential, Location: zone("America/New_York"), KeepWithin: 3 * time.Hour},
		"exponential Berlin 12h":  {Kind: catalog.PolicyExponential, Location: zone("Europe/Berlin"), KeepWithin: 12 * time.Hour},
		"limit 24":                {Kind: catalog.PolicyLimit, MaxBackups: 24},
		"limit 2 keep-within 36h": {Kind: catalog.PolicyLimit, MaxBackups: 2, KeepWithin: 36 * time.Hour},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := simConfig{policy: p, start: ts("2026-01-01T00:00:00Z"), duration: 365 * 24 * time.Hour, locks: true}
			logSim(t, cfg, runSim(t, cfg))
		})
	}
}
