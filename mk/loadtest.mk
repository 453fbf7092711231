# Load tests and benchmarks (see loadtests/README.md). Included by the top-level Makefile.
#
#   make loadtest [USERS=32] [SPAWN_RATE=8] [DURATION=60] [SCENARIO=stream|nonstream|mixed|spike|all]
#                 [TARGET=local|https://host] [MODEL=demo-team] [API_KEY=...] [LOADTEST_ARGS=...]
#   make bench    [BENCH_ARGS="--levels 1,16,64,256 --duration 5 ..."]   (BENCH_ARGS=--tiny: seconds)
#   make profile  [PROFILE_ARGS="--model demo-team --concurrency 64 --duration 15"]
USERS ?= 32
SPAWN_RATE ?= 8
DURATION ?= 60
SCENARIO ?= stream
TARGET ?= local
MODEL ?= demo-team
API_KEY ?=
LOADTEST_ARGS ?=
BENCH_ARGS ?=
PROFILE_ARGS ?=

.PHONY: loadtest bench profile

## loadtest: fake LLM + service locally (or TARGET=<url>), a bounded headless Locust campaign, reports in reports/
loadtest: $(STAMP)
	$(if $(API_KEY),LOCUST_API_KEY='$(API_KEY)') $(BIN)/python -m loadtests.campaign \
	  --users $(USERS) --spawn-rate $(SPAWN_RATE) --duration $(DURATION) --scenario $(SCENARIO) \
	  --target $(TARGET) --model $(MODEL) $(LOADTEST_ARGS)

## bench: service vs floor (CPU per stream, TTFT, throughput, RSS) at several concurrencies, in bench-results/
bench: $(STAMP)
	$(BIN)/python -m loadtests.bench $(BENCH_ARGS)

## profile: py-spy flame graph and top functions of one service worker under load, in reports/
profile: $(STAMP)
	$(BIN)/python -m loadtests.profile $(PROFILE_ARGS)
