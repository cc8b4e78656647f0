package supervisor

import (
	"crypto/sha256"
	"encoding/base64"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The status page works air-gapped: it loads nothing from anywhere (no src or href but its
// own data: favicon), and its Content-Security-Policy allows exactly its inline script and
// style.
func TestStatusPageSelfContained(t *testing.T) {
	page := string(statusPage)
	for _, m := range regexp.MustCompile(`(?i)\b(src|href)\s*=\s*"([^"]*)"`).FindAllStringSubmatch(page, -1) {
		require.Equal(t, "data:,", m[2], "the page loads %s", m[0])
	}
	require.NotRegexp(t, `(?i)@import|url\(`, page, "the style loads nothing")
	script := regexp.MustCompile(`(?s)<script>(.*?)</script>`).FindStringSubmatch(page)
	require.NotNil(t, script)
	sum := sha256.Sum256([]byte(script[1]))
	require.Contains(t, statusPageCSP, "script-src 'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'")
	require.True(t, strings.HasPrefix(statusPageCSP, "default-src 'none';"), statusPageCSP)
	require.Contains(t, statusPageCSP, "connect-src 'self'")
	require.Contains(t, statusPageCSP, "frame-ancestors 'none'")
}
