package supervisor

import (
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"fmt"
	"net/http"
	"regexp"
	"strings"
)

// statusPage is the status page served at the API's "/": one self-contained HTML file (no
// external asset, so that it works air-gapped) whose script reads GET /v1/status and GET
// /v1/backups every few seconds, the same handlers that answer tools.
//
//go:embed web/status.html
var statusPage []byte

// statusPageCSP is the page's Content-Security-Policy: its own inline script and style only
// (by hash), requests to its own origin only, and no framing.
var statusPageCSP = mustPageCSP(statusPage)

// mustPageCSP builds the Content-Security-Policy that allows exactly the inline <script> and
// <style> elements of page.
func mustPageCSP(page []byte) string {
	hashes := func(tag string) string {
		re := regexp.MustCompile(`(?s)<` + tag + `>(.*?)</` + tag + `>`)
		var out []string
		for _, m := range re.FindAllSubmatch(page, -1) {
			sum := sha256.Sum256(m[1])
			out = append(out, "'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'")
		}
		if len(out) == 0 {
			panic(fmt.Sprintf("the embedded status page has no <%s> element", tag))
		}
		return strings.Join(out, " ")
	}
	return "default-src 'none'; script-src " + hashes("script") + "; style-src " + hashes("style") +
		"; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}

// handlePage serves the status page. It needs the access of the GET endpoints, like the
// JSON it shows; it holds no data itself.
func handlePage(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", statusPageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(statusPage) // the client went away
	}
}
