# strata - developer tasks. Run `make` (or `make help`) for the list.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
MAKEFLAGS += --no-builtin-rules --warn-undefined-variables

GO ?= go
PG := bash deploy/postgres.sh
ES := bash deploy/elasticsearch.sh

# Override on the command line, e.g. `make test PKG=./eventstore/... RUN=TestAppend`.
PKG ?= ./...
RUN ?=
TESTFLAGS ?=
BENCH ?= .
FUZZ ?= FuzzDecodeCommand
FUZZTIME ?= 30s
STRESS_COUNT ?= 30
FAULT_STRESS_COUNT ?= 5
FUZZPKG ?= ./command

# staticcheck is run via `go run pkg@version`, so it is not a go.mod dependency.
# v0.8.2 (module go 1.26.0) supports Go 1.26.
STATICCHECK_VERSION := v0.8.2

RUN_FLAG := $(if $(RUN),-run '$(RUN)')

# Recipe prefix: start (or reuse) PostgreSQL and export DATABASE_URL. Kept as
# separate statements so that, under `bash -e`, a failing script fails make.
WITH_DB = DATABASE_URL="$$($(PG) start)"; \
	[[ -n $$DATABASE_URL ]]; \
	export DATABASE_URL; \
	echo "DATABASE_URL=$$DATABASE_URL" >&2;

# Recipe prefix: start (or reuse) Elasticsearch and export ELASTICSEARCH_URL, for the tests and
# benchmarks that run the search contract against it.
WITH_ES = ELASTICSEARCH_URL="$$($(ES) start)"; \
	[[ -n $$ELASTICSEARCH_URL ]]; \
	export ELASTICSEARCH_URL; \
	echo "ELASTICSEARCH_URL=$$ELASTICSEARCH_URL" >&2;

# `make run SEARCH=elasticsearch` runs strata dev with the local Elasticsearch instead of PostgreSQL
# full-text search.
SEARCH ?= postgres
WITH_SEARCH = $(if $(filter elasticsearch,$(SEARCH)),$(WITH_ES))

.PHONY: help
help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## .*$$' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "\033[36m%-12s\033[0m %s\n", $$1, $$2}'

.PHONY: run
run: ## Run the dev server (go run ./cmd/strata dev) against the local PostgreSQL (SEARCH=elasticsearch: with a local Elasticsearch)
	$(WITH_DB) $(WITH_SEARCH) $(GO) run ./cmd/strata dev

.PHONY: build
build: ## Build bin/strata
	$(GO) build -o bin/strata ./cmd/strata

.PHONY: vet
vet: ## Run go vet
	$(GO) vet ./...

.PHONY: test
test: vet ## Run all tests with -race against PostgreSQL and Elasticsearch (deploy/*.sh, or $DATABASE_URL, $ELASTICSEARCH_URL)
	$(WITH_DB) $(WITH_ES) $(GO) test -race -count=1 -timeout 12m $(RUN_FLAG) $(TESTFLAGS) $(PKG)

.PHONY: test-esdb
test-esdb: ## Run the event store contract suite against a real EventStoreDB (ESDB_URL, default: the compose one)
	ESDB_URL="$${ESDB_URL:-esdb://admin:changeit@localhost:2113?tls=false}" \
		$(GO) test -race -count=1 -run 'TestContract' -v ./eventstore/esdb/ | grep -E '^(=== RUN|--- |ok|FAIL|PASS)'

.PHONY: stress
stress: ## Repeat the concurrency and fault tests (STRESS_COUNT=30; FAULT_STRESS_COUNT=5 for the crash, restart and replay tests)
	$(WITH_DB) $(GO) test -race -count=$(STRESS_COUNT) -timeout 30m \
		-run 'TestTailingReaderNeverSkipsLateCommits|TestContract|TestGlobalOrderIsNumeric' ./eventstore/postgres/
	$(WITH_DB) $(GO) test -race -count=$(STRESS_COUNT) -timeout 30m \
		-run 'TestIdempotency|TestConcurrent|TestSKUClaims|TestCachedState' ./command/
	$(WITH_DB) $(GO) test -race -count=$(FAULT_STRESS_COUNT) -timeout 30m \
		-run 'TestProjectionEqualsReplay|TestPoison|TestRetryAfter|TestSkipDrops|TestMalformed|TestCheckpointFollows|ApplyBatch|TestTakingAPartition|TestPartitionsStopWhenTheLockConnectionHangs' ./projector/postgres/
	$(WITH_DB) $(GO) test -race -count=$(FAULT_STRESS_COUNT) -timeout 30m -run 'TestWaiter|TestToken|TestOrderEvents' ./query/
	$(WITH_DB) $(WITH_ES) $(GO) test -race -count=$(FAULT_STRESS_COUNT) -timeout 30m -run 'TestDevSurvivesSIGKILL' ./cmd/strata/
	$(WITH_DB) $(GO) test -race -count=$(FAULT_STRESS_COUNT) -timeout 30m \
		-run 'TestRelayCrash|TestRelaySurvivesNATSRestart|TestRelaySurvivesClusterNodeLoss' ./relay/

.PHONY: test-short
test-short: ## Run the short tests with -race, no database needed
	$(GO) test -race -short $(RUN_FLAG) $(TESTFLAGS) $(PKG)

.PHONY: bench
bench: ## Run benchmarks against PostgreSQL and Elasticsearch, one package at a time; output also goes to bench.out
	$(WITH_DB) $(WITH_ES) $(GO) test -p 1 -run '^$$' -bench '$(BENCH)' -benchmem -count=1 -timeout 30m $(TESTFLAGS) $(PKG) 2>&1 | tee bench.out

.PHONY: fuzz
fuzz: ## Fuzz the command decoder for 30s (FUZZ, FUZZTIME, FUZZPKG to override)
	$(GO) test -run '^$$' -fuzz '$(FUZZ)' -fuzztime $(FUZZTIME) $(FUZZPKG)

.PHONY: lint
lint: ## gofmt check, go vet, go mod tidy -diff, staticcheck
	@files="$$(find . -type d \( -path './.*' -o -path ./bin -o -name testdata -o -name vendor \) -prune \
		-o -type f -name '*.go' -print0 | xargs -0 -r gofmt -l)"; \
	if [[ -n $$files ]]; then \
		echo "gofmt: these files need formatting (run gofmt -w):" >&2; \
		echo "$$files" >&2; \
		exit 1; \
	fi
	$(GO) vet ./...
	$(GO) mod tidy -diff
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

.PHONY: db-start
db-start: ## Start (or reuse) the local PostgreSQL and print its URL
	@$(PG) start

.PHONY: db-stop
db-stop: ## Stop the local PostgreSQL (data in .data/ is kept)
	@$(PG) stop

.PHONY: db-status
db-status: ## Show whether the local PostgreSQL is running
	@$(PG) status

.PHONY: db-url
db-url: ## Print the PostgreSQL URL (no side effects)
	@$(PG) url

.PHONY: es-start
es-start: ## Start (or reuse) the local Elasticsearch and print its URL
	@$(ES) start

.PHONY: es-stop
es-stop: ## Stop the local Elasticsearch (data in .data/ is kept)
	@$(ES) stop

.PHONY: es-status
es-status: ## Show whether the local Elasticsearch is running
	@$(ES) status

.PHONY: es-url
es-url: ## Print the Elasticsearch URL (no side effects)
	@$(ES) url

.PHONY: clean
clean: ## Remove build and benchmark outputs (not the database in .data/)
	rm -rf bin bench.out
