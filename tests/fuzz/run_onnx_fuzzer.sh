#!/usr/bin/env bash
# Builds the ONNX importer's libFuzzer target and runs it (default 10 minutes): kept for the
# README's command; it is `tests/fuzz/run_fuzzer.sh onnx`, which builds and runs every target.
#
#   make build && tests/fuzz/run_onnx_fuzzer.sh [SECONDS] [BUILD_DIR]
#
# Findings are written to build/fuzz/onnx/ (crash-*, leak-*).
exec "$(dirname "$0")/run_fuzzer.sh" onnx "$@"
