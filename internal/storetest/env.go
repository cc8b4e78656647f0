package storetest

import (
	"os"
	"strings"
	"testing"
)

// The variables through which scripts/test-services tells tests where the
// servers are.
const (
	// EnvServices is set (to "1") when the servers run: tests that need one
	// fail instead of skipping when it is set and a server is missing.
	EnvServices = "ETCDBR_TEST_SERVICES"

	EnvS3Endpoint    = "ETCDBR_TEST_S3_ENDPOINT"
	EnvGCSEndpoint   = "ETCDBR_TEST_GCS_ENDPOINT"
	EnvAzureEndpoint = "ETCDBR_TEST_AZURE_ENDPOINT"

	// The installed binaries, for tests that start servers of their own
	// (to stop and restart them).
	EnvMinIOBin   = "ETCDBR_TEST_MINIO_BIN"
	EnvFakeGCSBin = "ETCDBR_TEST_FAKE_GCS_BIN"
	EnvNodeBin    = "ETCDBR_TEST_NODE_BIN"
	EnvAzuriteBin = "ETCDBR_TEST_AZURITE_BIN"
)

func endpointVar(kind Kind) string {
	switch kind {
	case S3:
		return EnvS3Endpoint
	case GCS:
		return EnvGCSEndpoint
	default:
		return EnvAzureEndpoint
	}
}

// Environ returns the variables that describe the running servers and the
// installed binaries to tests.
func Environ(servers []*Server, bins Binaries) []string {
	env := []string{
		EnvServices + "=1",
		EnvMinIOBin + "=" + bins.MinIO,
		EnvFakeGCSBin + "=" + bins.FakeGCS,
		EnvNodeBin + "=" + bins.Node,
		EnvAzuriteBin + "=" + bins.Azurite,
	}
	for _, s := range servers {
		env = append(env, endpointVar(s.Kind)+"="+s.Endpoint)
	}
	return env
}

// Required reports whether tests must have the servers: under
// scripts/test-services, or in CI.
func Required() bool {
	return os.Getenv(EnvServices) != "" || os.Getenv("CI") != ""
}

// MissingHelp says how to run tests that need the servers.
const MissingHelp = "the object-storage test servers are not running: run `make test`, or " +
	"`go run ./scripts/test-services -- go test ./<package>/...` to run some tests with them"

// ServiceFromEnv returns the running server of the given kind that
// scripts/test-services announced, if any.
func ServiceFromEnv(kind Kind) (Service, bool) {
	endpoint := strings.TrimSuffix(os.Getenv(endpointVar(kind)), "/")
	if endpoint == "" {
		return Service{}, false
	}
	return Service{Kind: kind, Endpoint: endpoint}, true
}

// BinariesFromEnv returns the installed binaries that scripts/test-services
// announced, if it did.
func BinariesFromEnv() (Binaries, bool) {
	b := Binaries{
		MinIO:   os.Getenv(EnvMinIOBin),
		FakeGCS: os.Getenv(EnvFakeGCSBin),
		Node:    os.Getenv(EnvNodeBin),
		Azurite: os.Getenv(EnvAzuriteBin),
	}
	ok := b.MinIO != "" && b.FakeGCS != "" && b.Node != "" && b.Azurite != ""
	return b, ok
}

// RequireService returns the running server of kind that scripts/test-services announced,
// with its ProviderEnv set for the rest of the test (t.Setenv: this process's own stores
// reach it, and the binaries the test starts inherit it). Without one the test fails where
// the servers are required (Required) and is skipped elsewhere.
func RequireService(t testing.TB, kind Kind) Service {
	t.Helper()
	svc, ok := ServiceFromEnv(kind)
	if !ok {
		if Required() {
			t.Fatal(MissingHelp)
		}
		t.Skip(MissingHelp)
	}
	for _, kv := range svc.ProviderEnv() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return svc
}
