#!/usr/bin/env bash
# Rewrites the list of supported ONNX operators in docs/onnx.md from the importer's operator
# table: it builds the unit tests and reruns the test that compares the two
# (Onnx.DocsListTheSupportedOperators) with CANDELA_UPDATE_ONNX_DOCS=1, which makes it write the
# list instead of failing.
#
#   scripts/update-onnx-docs.sh [BUILD_DIR]   (default: build; the test writes to the checkout it
#                                              was configured from)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$src/build}
cmake --build "$build" --target candela_unit_tests
CANDELA_UPDATE_ONNX_DOCS=1 "$build/candela_unit_tests" \
  --gtest_filter=Onnx.DocsListTheSupportedOperators
git -C "$src" diff --stat -- docs/onnx.md
