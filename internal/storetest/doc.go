// Package storetest runs real object-storage servers for tests: MinIO (S3),
// fake-gcs-server (GCS) and Azurite (Azure Blob), on loopback ports.
//
// The servers are installed once into a cache directory (Install), started
// on free ports (Start) and reached through the same store URLs and
// credentials a user would configure (Service). `make test` runs the
// scripts/test-services program, which installs and starts the three servers,
// exports their endpoints in ETCDBR_TEST_* variables (Environ), runs the
// tests and stops the servers; tests find them with ServiceFromEnv.
//
// Nothing here is used by etcdbr itself.
package storetest
