# Two commands do everything on a fresh Debian 12 machine:
#   make demo   install what is missing, build, explain a few digits with several methods
#   make test   install what is missing, build, run every test suite
BUILD ?= build
JOBS ?= 2
CMAKE_FLAGS ?=
export CCACHE_SLOPPINESS = pch_defines,time_macros,include_file_mtime,include_file_ctime

.PHONY: all deps build test demo serve bench clean sanitize

all: build

deps:
	@bash scripts/install-deps.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && OMP_WAIT_POLICY=PASSIVE ctest -j $(JOBS) --output-on-failure --timeout 900

demo: build $(BUILD)/demo/manifest.json
	@bash scripts/demo.sh $(BUILD)

# The demo's shapes CNN, its pictures and the breast-cancer MLP (seeded, about a minute).
$(BUILD)/demo/manifest.json: scripts/make_demo.py
	/usr/bin/python3 scripts/make_demo.py --fixtures $(BUILD)/fixtures --out $(BUILD)/demo

# The web UI and the HTTP API on the demo's models and data: http://127.0.0.1:8080/
# (docs/api.md, docs/web.md). PORT=0 picks a free port.
PORT ?= 8080
serve: build $(BUILD)/demo/manifest.json
	$(BUILD)/bin/candela serve --models $(BUILD)/demo/models --data $(BUILD)/demo/data --results $(BUILD)/serve-results --port $(PORT)

bench: build
	$(BUILD)/bin/bench_gradient

# Candela's code under AddressSanitizer and UndefinedBehaviorSanitizer (LibTorch uninstrumented):
# builds build-asan and runs the unit and integration suites (SANITIZE_LABELS to choose).
# Only the suites of those labels are built, and the main build's fixtures and ground-truth sets
# are reused when it has them (they do not depend on how Candela is compiled).
SANITIZE_LABELS ?= unit|integration
SANITIZE_TARGETS = $(if $(findstring unit,$(SANITIZE_LABELS)),candela_unit_tests) \
                   $(if $(findstring conformance,$(SANITIZE_LABELS)),candela_conformance_tests) \
                   $(if $(findstring integration,$(SANITIZE_LABELS)),candela_integration_tests)
SANITIZE_DATA = $(if $(and $(wildcard $(BUILD)/fixtures/lm_manifest.json),$(wildcard $(BUILD)/groundtruth/manifest.json)),\
                -DCANDELA_DATA_FROM=$(abspath $(BUILD)),-DCANDELA_DATA_FROM=)
sanitize: deps
	cmake -S . -B build-asan -G Ninja -DCANDELA_SANITIZE=ON -DCANDELA_BUILD_BENCH=OFF $(SANITIZE_DATA) $(CMAKE_FLAGS)
	cmake --build build-asan -j $(JOBS) --target candela_cli $(SANITIZE_TARGETS)
	cd build-asan && OMP_WAIT_POLICY=PASSIVE \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=0 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/sanitize/lsan.supp:print_suppressions=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:suppressions=$(CURDIR)/tests/sanitize/ubsan.supp \
	  ctest -j $(JOBS) -L '$(SANITIZE_LABELS)' --output-on-failure --timeout 1800

clean:
	rm -rf $(BUILD)
