# brokerkit: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

BROKERS        := bash scripts/brokers.sh
GO_TEST_FLAGS  ?= -race -count=1 -timeout 20m
# Loads the endpoints of the native brokers unless the caller set them (or Docker
# is there for testcontainers).
WITH_BROKERS   := if [ -z "$${BROKERKIT_AMQP_URL:-}" ] && $(BROKERS) status >/dev/null 2>&1; then eval "$$($(BROKERS) env)"; fi;

.PHONY: help demo test test-unit test-reliability bench lint brokers-up brokers-down brokers-status brokers-ensure

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

demo: ## run the order -> notification demo on the embedded mem:// broker (BROKER_URL switches it)
	go run ./examples/orders

test: lint brokers-ensure ## set up the real brokers if needed, then run every test (race detector on)
	@$(WITH_BROKERS) go test $(GO_TEST_FLAGS) ./...
	@$(MAKE) --no-print-directory test-reliability

test-unit: ## run the tests that need no broker (broker suites skip unless CI=true)
	go test $(GO_TEST_FLAGS) ./...

test-reliability: brokers-ensure ## broker restart / crash tests, one package at a time
	@$(WITH_BROKERS) BROKERKIT_RELIABILITY=1 go test $(GO_TEST_FLAGS) -p 1 -run 'Reliability' ./adapters/...

bench: brokers-ensure ## benchmarks: library vs raw clients and vs Watermill on the real brokers, as ratios
	@$(WITH_BROKERS) go test -run '^$$' -bench . -benchmem -benchtime 2s . ./driver/ ./adapters/membroker/ ./middleware/ ./idempotency/ ./bench/...
	@$(WITH_BROKERS) go -C bench/compare test -run '^$$' -bench . -benchmem -benchtime 1s .

lint: ## gofmt and go vet
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	go vet ./...
	go -C bench/compare vet ./...

brokers-ensure: # start the native brokers unless endpoints are set or Docker can run testcontainers
	@if [ -n "$${BROKERKIT_AMQP_URL:-}" ]; then echo "brokers: using endpoints from the environment"; \
	elif timeout 5 docker info >/dev/null 2>&1; then echo "brokers: Docker found; tests start them with testcontainers"; \
	elif [ "$$(id -u)" != 0 ]; then echo "brokers: not root and no Docker: broker suites will skip (run 'sudo make brokers-up' first)"; \
	else $(BROKERS) up; fi

brokers-up: ## install (first time) and start RabbitMQ, Kafka, ElasticMQ (SQS), Redis, PostgreSQL on 127.0.0.1
	$(BROKERS) up

brokers-down: ## stop the native brokers
	$(BROKERS) down

brokers-status: ## show which native brokers are running
	$(BROKERS) status
