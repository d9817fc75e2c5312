# Two commands do everything on a fresh Debian 12 machine:
#   make demo   install what is missing, build, explain a few digits with several methods
#   make test   install what is missing, build, run every test suite
BUILD ?= build
JOBS ?= 2
CMAKE_FLAGS ?=
export CCACHE_SLOPPINESS = pch_defines,time_macros,include_file_mtime,include_file_ctime

.PHONY: all deps build test demo bench clean

all: build

deps:
	@bash scripts/install-deps.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && OMP_WAIT_POLICY=PASSIVE ctest -j $(JOBS) --output-on-failure --timeout 900

demo: build
	@bash scripts/demo.sh $(BUILD)

bench: build
	$(BUILD)/bin/bench_gradient

clean:
	rm -rf $(BUILD)
