// Package kube holds end-to-end tests of etcdbr under a real kube-apiserver: etcdbr runs
// its member, kube-apiserver (built by scripts/kube-apiserver) stores in it, and the tests
// restore etcd underneath a running kube-apiserver (live over the HTTP API, on a CORRUPT
// alarm, and offline with `etcdbr restore`) and check what Kubernetes clients see after:
// consistent lists, informers and single reads must converge to the restored state.
//
// It is a module of its own so that client-go stays out of etcdbr's dependencies. Run it
// with `make test-kube`, or `go test ./...` in this directory. TestMain builds etcdbr from
// the repository root and gets kube-apiserver from `go run ./scripts/kube-apiserver`
// (cached in $ETCDBR_KUBE_CACHE, by default ~/.cache/etcdbr-kube/<version>), or takes the
// binary $ETCDBR_KUBE_APISERVER names. -short skips every test.
package kube
