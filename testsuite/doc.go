// Package testsuite holds end-to-end tests that build the real etcdbr binary and run it
// against real etcd data dirs and stores, with damage and signals injected.
package testsuite
