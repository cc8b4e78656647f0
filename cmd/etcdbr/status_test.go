package main

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// etcdbr status on an address where nothing listens (a stopped member) names the address
// and what to check, and exits 1.
func TestStatusStoppedMember(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close()) // the port refuses connections now

	for _, args := range [][]string{{"status", "--api", "http://" + addr}, {"status", "--api", "http://" + addr, "--json"}} {
		code, out := etcdbr(t, args...)
		assert.Equal(t, exitFailure, code, out)
		assert.Contains(t, out, fmt.Sprintf("no etcdbr API answers at http://%s (connection refused)", addr))
		assert.Contains(t, out, "is `etcdbr run` running")
		assert.Contains(t, out, "--listen-api")
		assert.False(t, strings.HasPrefix(strings.TrimSpace(out), "{"), "no JSON on a stopped member:\n%s", out)
	}
}

// A URL that is not one is a usage error (exit 2).
func TestStatusBadAPI(t *testing.T) {
	for _, api := range []string{"127.0.0.1:2378", "ftp://127.0.0.1:2378", "http://"} {
		code, out := etcdbr(t, "status", "--api", api)
		assert.Equal(t, exitUsage, code, out)
		assert.Contains(t, out, "want the URL of the API, e.g. http://127.0.0.1:2378", api)
	}
}

// The client certificate flags go together, and only with an https API (exit 2 otherwise).
func TestStatusClientCertFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--api", "https://127.0.0.1:2378", "--api-client-cert", "c.pem"}, "--api-client-cert and --api-client-key go together"},
		{[]string{"--api", "https://127.0.0.1:2378", "--api-client-key", "k.pem"}, "--api-client-cert and --api-client-key go together"},
		{[]string{"--api", "http://127.0.0.1:2378", "--api-client-cert", "c.pem", "--api-client-key", "k.pem"}, "give --api https://"},
		{[]string{"--api", "https://127.0.0.1:2378", "--api-client-cert", "missing.pem", "--api-client-key", "missing.pem"},
			"missing.pem: no such file or directory"},
	} {
		code, out := etcdbr(t, append([]string{"status"}, tc.args...)...)
		assert.Equal(t, exitUsage, code, out)
		assert.Contains(t, out, tc.want, tc.args)
	}
}
