## bench-overhead: per-request cost of metrics and tracing (ratios against a bare run, same process)
.PHONY: bench-overhead
bench-overhead: $(STAMP)
	$(BIN)/python -m loadtests.overhead_bench --requests $${REQUESTS:-200} --rounds $${ROUNDS:-5} --json bench-results/overhead.json
