#!/usr/bin/env bash
# Proves that the test suite does not depend on one machine's trained fixtures.
#
# The fixtures (tests/fixtures/make_fixtures.py, make_text_fixtures.py, make_vit_fixtures.py,
# make_lm_fixtures.py, make_spm_fixtures.py) and
# ground-truth sets (scripts/make_groundtruth.py)
# are trained at build time, so their weights depend on the CPU's kernels and the thread count.
# For each configuration CAPABILITY:THREADS this script retrains both under
# ATEN_CPU_CAPABILITY=CAPABILITY with THREADS intra-op threads, then runs every CTest suite against
# them with the same capability and thread count. It exits non-zero if any configuration fails.
#
# Usage: scripts/check-portability.sh [BUILD_DIR] [CONFIG ...]
#   BUILD_DIR  an existing build (default: build; `make build` first)
#   CONFIG     CAPABILITY:THREADS, default: default:1 default:2 avx2:1 avx2:2
# Example:
#   scripts/check-portability.sh build default:1 avx2:2
# CTEST_ARGS (environment) adds arguments to ctest, e.g. CTEST_ARGS="-R Layer" for a subset.
# Outputs: BUILD_DIR/portability/CAPABILITY-THREADS/{fixtures,groundtruth,ctest.log} and a summary table.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(default:1 default:2 avx2:1 avx2:2)
[ -f "$build/CTestTestfile.cmake" ] || { echo "check-portability: no build in '$build'; run 'make build' first" >&2; exit 2; }
python=${CANDELA_PYTHON:-/usr/bin/python3}
jobs=${JOBS:-2}

summary=()
status=0
for config in "${configs[@]}"; do
  cap=${config%%:*}
  threads=${config##*:}
  case "$cap" in default|avx2|avx512) ;; *) echo "check-portability: unknown capability '$cap' (default, avx2, avx512)" >&2; exit 2 ;; esac
  case "$threads" in ''|*[!0-9]*) echo "check-portability: threads must be a number, got '$threads'" >&2; exit 2 ;; esac
  dir="$build/portability/$cap-$threads"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  echo "== $cap, $threads thread(s): training fixtures in $dir"
  start=$(date +%s)
  if ! ATEN_CPU_CAPABILITY=$cap CANDELA_FIXTURE_THREADS=$threads "$python" tests/fixtures/make_fixtures.py --out "$dir/fixtures" >"$dir/fixtures.log" 2>&1 ||
     ! ATEN_CPU_CAPABILITY=$cap CANDELA_FIXTURE_THREADS=$threads "$python" tests/fixtures/make_text_fixtures.py --out "$dir/fixtures" >>"$dir/fixtures.log" 2>&1 ||
     ! ATEN_CPU_CAPABILITY=$cap CANDELA_FIXTURE_THREADS=$threads "$python" tests/fixtures/make_vit_fixtures.py --out "$dir/fixtures" >>"$dir/fixtures.log" 2>&1 ||
     ! ATEN_CPU_CAPABILITY=$cap CANDELA_FIXTURE_THREADS=$threads "$python" tests/fixtures/make_lm_fixtures.py --out "$dir/fixtures" >>"$dir/fixtures.log" 2>&1 ||
     ! "$python" tests/fixtures/make_spm_fixtures.py --out "$dir/fixtures" >>"$dir/fixtures.log" 2>&1 ||
     ! ATEN_CPU_CAPABILITY=$cap CANDELA_FIXTURE_THREADS=$threads "$python" scripts/make_groundtruth.py --out "$dir/groundtruth" >"$dir/groundtruth.log" 2>&1; then
    echo "check-portability: fixture generation failed, see $dir/*.log" >&2
    summary+=("$cap threads=$threads: fixture generation FAILED")
    status=1
    continue
  fi
  # Two intra-op threads per test: one test at a time, so that the suite measures what it says.
  j=$jobs
  [ "$threads" -gt 1 ] && j=1
  echo "== $cap, $threads thread(s): running the suite (ctest -j $j)"
  (cd "$build" && ATEN_CPU_CAPABILITY=$cap CANDELA_TEST_THREADS=$threads OMP_WAIT_POLICY=PASSIVE \
     CANDELA_FIXTURE_DIR="$dir/fixtures" CANDELA_GROUNDTRUTH_DIR="$dir/groundtruth" \
     ctest -j "$j" --output-on-failure --timeout 900 ${CTEST_ARGS:-}) >"$dir/ctest.log" 2>&1
  rc=$?
  line=$(grep -E "tests passed|tests failed" "$dir/ctest.log" | tail -1)
  summary+=("$cap threads=$threads: ${line:-no ctest summary} ($(( $(date +%s) - start )) s)")
  if [ $rc -ne 0 ]; then
    status=1
    grep -E "^\s+[0-9]+ - .*\((Failed|Timeout|SEGFAULT|Subprocess aborted|Exception)\)" "$dir/ctest.log" | head -20
  fi
done
echo
echo "check-portability summary:"
printf '  %s\n' "${summary[@]}"
exit $status
