# etcdbr: build, test, run.
GO      ?= go
BIN     ?= bin/etcdbr
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.buildVersion=$(VERSION)

.PHONY: build test fuzz test-kube kube-apiserver promtool etcd-backup-restore soak chaos bench test-services lint run clean

# The object-storage servers the tests run against (MinIO, fake-gcs-server, Azurite): installed
# once into ~/.cache/etcdbr-test-services ($$ETCDBR_TEST_SERVICES_CACHE), started on free loopback
# ports around the test run and stopped after it (scripts/test-services).
WITH_SERVICES := $(GO) run ./scripts/test-services --

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/etcdbr

# Everything CI runs: formatting, vet, and the whole test suite (unit and end-to-end, the
# alerting rules under promtool and the migration from a real etcd-backup-restore included),
# a few seconds of fuzzing per fuzz target, then the end-to-end tests under a real
# kube-apiserver (the deployment manifests included).
test: lint promtool etcd-backup-restore
	$(WITH_SERVICES) $(GO) test -count=1 -timeout 20m ./...
	FUZZTIME=$(FUZZTIME_TEST) GO=$(GO) ./scripts/fuzz.sh
	$(MAKE) test-kube

# Fuzzing (docs/testing.md): every fuzz target, one after another, $(FUZZTIME) each
# (scripts/fuzz.sh; `make fuzz FUZZTIME=10m` for the long runs). Plain `go test` runs the
# seed corpora (testdata/fuzz/) as unit tests; `make test` fuzzes each target
# $(FUZZTIME_TEST) on top.
FUZZTIME      ?= 1m
FUZZTIME_TEST ?= 3s
fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) ./scripts/fuzz.sh

# etcdbr under a real kube-apiserver (testsuite/kube, a module of its own so that client-go
# stays out of etcdbr's dependencies): restores live, on a CORRUPT alarm and offline, and
# what Kubernetes clients see after them.
test-kube: kube-apiserver
	cd testsuite/kube && $(GO) test -count=1 -timeout 15m ./...

# Build kube-apiserver from the Go module proxy, once, into ~/.cache/etcdbr-kube/<version>
# ($$ETCDBR_KUBE_CACHE); a few minutes the first time (scripts/kube-apiserver).
kube-apiserver:
	$(GO) run ./scripts/kube-apiserver

# Build Prometheus' promtool from the Go module proxy, once, into
# ~/.cache/etcdbr-promtool/<version> ($$ETCDBR_PROMTOOL_CACHE; scripts/promtool): the test
# suite checks and unit-tests deploy/monitoring's alerting rules with it.
promtool:
	$(GO) run ./scripts/promtool

# Build etcd-backup-restore's etcdbrctl from the Go module proxy, once, into
# ~/.cache/etcdbr-ebr/<version> ($$ETCDBR_EBR_CACHE; scripts/etcd-backup-restore): the test
# suite restores and converts the store it writes (testsuite/migrate_test.go).
etcd-backup-restore:
	$(GO) run ./scripts/etcd-backup-restore

# Long runs: memory and soak tests (build tag soak), e.g. a 1 GiB upload to every store kind.
soak: lint
	$(WITH_SERVICES) $(GO) test -tags soak -count=1 -timeout 60m ./...

# Crash trials (docs/chaos.md): `etcdbr run` under writers, SIGKILLed at random moments (during
# full snapshots, delta uploads, GC, compaction, restores), started again, checked; a table at
# the end. A failure prints the SEED, START and TRIALS that run it again. The suite runs 3.
TRIALS ?= 50
SEED   ?= $(shell date +%s%N)
START  ?= 0
chaos:
	ETCDBR_CHAOS_TRIALS=$(TRIALS) ETCDBR_CHAOS_SEED=$(SEED) ETCDBR_CHAOS_START=$(START) \
	  $(GO) test -count=1 -timeout 0 -v -run '^TestChaos$$' ./testsuite/

# Benchmarks beside plain etcd and etcd's tools (docs/bench.md); sizes: BENCH_FLAGS, e.g.
# BENCH_FLAGS='-keys 10000 -json'. Not part of test (its -short smoke is).
bench:
	$(GO) run ./testsuite/bench $(BENCH_FLAGS)

# Install the test servers only (the first time takes a few minutes: MinIO builds from source).
test-services:
	$(GO) run ./scripts/test-services -install

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd testsuite/kube && $(GO) vet ./...

# etcd on 127.0.0.1:2379 with its data in ./data and backups in ./data.backups. The binary
# runs as make's own child, not under `go run`: on Ctrl-C `go run` exits 1 even when the
# program stopped cleanly, and make would report that as a failed recipe.
run: build
	$(BIN) run --data-dir ./data

clean:
	rm -rf bin data data.backups
