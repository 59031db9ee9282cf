# Handoff's developer entry points. Every tool is pinned and installed into .tmp/bin, so a
# fresh clone needs only Go (and, where no PostgreSQL server runs, the machine's PostgreSQL
# binaries, which `make deps` installs on Debian/Ubuntu).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

BIN := $(abspath .tmp/bin)
export PATH := $(BIN):$(PATH)

BUF_VERSION                 := v1.75.0
PROTOC_GEN_GO_VERSION       := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION  := v1.6.2
PROTOC_GEN_CONNECT_GO_VERSION := v1.21.1
GRPCURL_VERSION             := v1.9.3

TOOLS := $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/protoc-gen-connect-go $(BIN)/grpcurl

.PHONY: help
help: ## Show the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

.PHONY: run
run: deps ## Run the whole system in one process, demo data loaded (Ctrl-C stops it)
	go run ./cmd/handoff

.PHONY: test
test: deps tools lint checkgenerate ## Everything CI checks: lint, generated code in step, go test -race ./..., short fuzzing
	go test -race -count=1 ./...
	$(MAKE) --no-print-directory fuzz

FUZZTIME ?= 10s
.PHONY: fuzz
fuzz: ## Fuzz the edge's gRPC-web frame and token parsing for FUZZTIME each
	go test -run '^$$' -fuzz '^FuzzGRPCWebFrames$$' -fuzztime $(FUZZTIME) ./gateway
	go test -run '^$$' -fuzz '^FuzzBearerTokens$$' -fuzztime $(FUZZTIME) ./gateway

.PHONY: test-short
test-short: ## Just the Go tests
	go test -race ./...

.PHONY: deps
deps: ## Install what the machine lacks (PostgreSQL binaries when no server is running)
	@.ci/system-deps

.PHONY: tools
tools: $(TOOLS) ## Install the pinned tools into .tmp/bin

$(BIN)/buf:
	GOBIN=$(BIN) go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(BIN)/protoc-gen-go-grpc:
	GOBIN=$(BIN) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
$(BIN)/protoc-gen-connect-go:
	GOBIN=$(BIN) go install connectrpc.com/connect/cmd/protoc-gen-connect-go@$(PROTOC_GEN_CONNECT_GO_VERSION)
$(BIN)/grpcurl:
	GOBIN=$(BIN) go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)

.PHONY: generate
generate: tools ## Regenerate Go code from proto/ (removes stale generated files first)
	find proto -name '*.pb.go' -o -name '*.connect.go' | xargs -r rm
	buf generate

.PHONY: checkgenerate
checkgenerate: tools ## Fail if the committed generated code differs from what proto/ generates
	rm -rf .tmp/gencheck && mkdir -p .tmp/gencheck
	buf generate -o .tmp/gencheck
	diff -r --exclude='*.proto' proto .tmp/gencheck/proto || { echo "generated code is stale: run 'make generate' and commit" >&2; exit 1; }

.PHONY: lint
lint: tools ## go vet, gofmt, buf lint, buf format
	go vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$' | grep -v '\.connect\.go$$')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted" >&2; exit 1; fi
	buf lint
	buf format -d --exit-code

.PHONY: bench
bench: deps ## Print the benchmarks' figures (holds/s, checkouts/s, latencies)
	go test -run '^$$' -bench . -benchtime 1x ./services/... 2>&1 | grep -v '^ok\|^PASS'

.PHONY: clean
clean: ## Remove local run data and tools
	rm -rf .data .tmp
