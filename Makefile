# Handoff's developer entry points. Every tool is pinned and installed into .tmp/bin, so a
# fresh clone needs only Go (and, where no PostgreSQL server runs, the machine's PostgreSQL
# binaries, which `make deps` installs on Debian/Ubuntu).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

BIN := $(abspath .tmp/bin)
# Node.js for the browser test's npm packages, where the machine's is too old for them: .ci/node
# installs it there (make deps), and only then.
NODE_BIN := $(abspath .tmp/node/bin)
export PATH := $(BIN):$(NODE_BIN):$(PATH)

BUF_VERSION                 := v1.75.0
PROTOC_GEN_GO_VERSION       := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION  := v1.6.2
PROTOC_GEN_CONNECT_GO_VERSION := v1.21.1
GRPCURL_VERSION             := v1.9.3
STATICCHECK_VERSION         := v0.7.0

TOOLS := $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/protoc-gen-connect-go $(BIN)/grpcurl $(BIN)/staticcheck

.PHONY: help
help: ## Show the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

.PHONY: run
run: $(BIN)/grpcurl ## Run the whole system in one process, demo data loaded (Ctrl-C stops it)
	@.ci/system-deps run
	@# Built, then run: under go run, Ctrl-C's clean stop still ended in "exit status 1" and a make
	@# error.
	go build -o $(BIN)/handoff ./cmd/handoff
	exec $(BIN)/handoff

.PHONY: test
test: deps ## Everything CI checks: lint, generated code in step, go test -race ./..., short fuzzing
	$(MAKE) --no-print-directory tested

# A make of its own after deps, so that it sees what deps installed (npm, read when the Makefile
# is parsed).
# Test packages run at once. Most of a package's time is spent waiting (timers, leases,
# backoffs): four at a time took 8 minutes against 14 two at a time on this 2-core machine. A
# stock PostgreSQL's 100 connections hold them: a test database's pools take at most 4
# connections each (testenv.TestPoolConns), and at most two tests running a whole system hold
# one at once, across packages (testenv.SystemSlots); a run peaked at 83. The timeout leaves room
# for a package's wait for a system slot.
TEST_PARALLEL ?= 4
TEST_TIMEOUT ?= 20m
.PHONY: tested
tested: tools lint checkgenerate web
	go test -race -count=1 -timeout $(TEST_TIMEOUT) -p $(TEST_PARALLEL) ./...
	$(MAKE) --no-print-directory fuzz

# A budget in executions, not seconds: with a duration, Go 1.26's fuzz coordinator can report its
# own deadline as a failure ("context deadline exceeded", no crasher; go.dev/issue/75804, fixed
# in 1.27), which a loaded CI machine hits. About 10s each here.
FUZZTIME ?= 30000x
# Minimizing a new interesting input may take 60s by default, which would spend a short run's
# whole budget on one input instead of fuzzing (seen in CI: 11 executions in 10s).
FUZZMINIMIZETIME ?= 1s
.PHONY: fuzz
fuzz: ## Fuzz the parsers of what comes from outside (frames, tokens, page tokens, vendor events, echoed answers) for FUZZTIME each
	go test -run '^$$' -fuzz '^FuzzGRPCWebFrames$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./gateway
	go test -run '^$$' -fuzz '^FuzzBearerTokens$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./gateway
	go test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./internal/pagetoken
	go test -run '^$$' -fuzz '^FuzzDecodeVendorEvent$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./pos-adapter
	go test -run '^$$' -fuzz '^FuzzSnippet$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./internal/urlsecret

.PHONY: test-short
test-short: ## Just the Go tests
	go test -race -timeout $(TEST_TIMEOUT) -p $(TEST_PARALLEL) ./...

.PHONY: deps
deps: ## Install what the machine lacks: PostgreSQL binaries, and Chromium and Node.js 20+ for the browser test
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
$(BIN)/staticcheck:
	GOBIN=$(BIN) go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

.PHONY: generate
generate: tools ## Regenerate Go code from proto/ (removes stale generated files first), and the browser page's TypeScript
	find proto -name '*.pb.go' -o -name '*.connect.go' | xargs -r rm
	buf generate
	$(MAKE) --no-print-directory web-generate

.PHONY: checkgenerate
checkgenerate: tools ## Fail if the committed generated code differs from what proto/ generates
	rm -rf .tmp/gencheck && mkdir -p .tmp/gencheck
	buf generate -o .tmp/gencheck
	diff -r --exclude='*.proto' proto .tmp/gencheck/proto || { echo "generated code is stale: run 'make generate' and commit" >&2; exit 1; }

.PHONY: lint
lint: tools ## go vet, staticcheck, gofmt, buf lint, buf format
	go vet ./...
	staticcheck ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$' | grep -v '\.connect\.go$$')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted" >&2; exit 1; fi
	buf lint
	buf format -d --exit-code

.PHONY: bench
bench: deps ## Print the benchmarks' figures (holds/s, checkouts/s, latencies) and a standard load run
	go test -run '^$$' -bench . -benchtime 1x ./services/... ./pos-adapter 2>&1 | grep -v '^ok\|^PASS'
	$(MAKE) --no-print-directory bench-load

BENCH_SHOPPERS ?= 64
BENCH_DURATION ?= 20s
# DATABASE_URL is left out: each run starts on a fresh private database (docs/performance.md);
# one used before would keep the demo chain's first hours, not the late-morning ones.
.PHONY: bench-load
bench-load: deps ## The standard load: mobile-mock shoppers over gRPC-web against a fresh one-process Handoff
	@mkdir -p .tmp/bench
	DATABASE_URL= go run ./mobile-mock load -spawn -shoppers $(BENCH_SHOPPERS) -duration $(BENCH_DURATION) \
	  -out .tmp/bench/load.json -histogram .tmp/bench/load-latency.svg

# The browser test's npm packages (mobile-mock/web, pinned by its package-lock.json): generated
# TypeScript is checked like the generated Go, and type-checked. Without npm these say so and the
# browser test skips, loudly.
WEB := mobile-mock/web
WEB_PROTO := --path proto/handoff/common --path proto/handoff/catalog --path proto/handoff/inventory \
  --path proto/handoff/cart --path proto/handoff/fulfilment
HAVE_NPM := $(shell command -v npm 2>/dev/null)

.PHONY: web
web: web-deps web-checkgenerate ## The browser page: npm packages, generated TypeScript in step, type check
ifdef HAVE_NPM
	cd $(WEB) && npm run --silent check
endif

.PHONY: web-deps
web-deps: $(if $(HAVE_NPM),$(WEB)/node_modules/.installed) ## Install the browser test's npm packages (and Node.js 22 into .tmp/node where the machine's is older than 20)
ifdef HAVE_NPM
	@.ci/node >/dev/null
else
	@echo "web-deps: no npm on this machine: the browser test (mobile-mock/web) will be SKIPPED. Install Node.js 20+ with npm (or npm alone: make test then fetches Node.js 22 into .tmp/node where the machine's is older than 20)." >&2
endif

$(WEB)/node_modules/.installed: $(WEB)/package.json $(WEB)/package-lock.json
	cd $(WEB) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

.PHONY: web-generate
web-generate: tools web-deps ## Regenerate the browser page's TypeScript from proto/
ifdef HAVE_NPM
	buf generate --template $(WEB)/buf.gen.yaml $(WEB_PROTO)
endif

.PHONY: web-checkgenerate
web-checkgenerate: tools web-deps ## Fail if the committed TypeScript differs from what proto/ generates
ifdef HAVE_NPM
	rm -rf .tmp/webgencheck && mkdir -p .tmp/webgencheck
	buf generate --template $(WEB)/buf.gen.yaml -o .tmp/webgencheck $(WEB_PROTO)
	diff -r $(WEB)/gen .tmp/webgencheck/$(WEB)/gen || { echo "generated TypeScript is stale: run 'make web-generate' and commit" >&2; exit 1; }
endif

.PHONY: clean
clean: ## Remove local run data and tools
	rm -rf .data .tmp
