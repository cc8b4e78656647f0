# etcdbr: build, test, run.
GO      ?= go
BIN     ?= bin/etcdbr
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.buildVersion=$(VERSION)

.PHONY: build test lint run clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/etcdbr

# Everything CI runs: formatting, vet, and the whole test suite (unit and end-to-end).
test: lint
	$(GO) test -count=1 -timeout 20m ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# etcd on 127.0.0.1:2379 with its data in ./data and backups in ./data.backups.
run:
	$(GO) run ./cmd/etcdbr run --data-dir ./data

clean:
	rm -rf bin data data.backups
