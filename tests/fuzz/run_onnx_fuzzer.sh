#!/usr/bin/env bash
# Builds the ONNX importer's libFuzzer target and runs it (default 10 minutes).
#
#   make build && tests/fuzz/run_onnx_fuzzer.sh [SECONDS] [BUILD_DIR]
#
# Only the importer and the harness are compiled by clang, with coverage and AddressSanitizer
# (C++17: clang 14 cannot compile LibTorch 1.13's headers as C++20); the rest of the library
# comes from the normal GCC build. Findings are written to build/fuzz/ (crash-*, leak-*).
set -euo pipefail
seconds=${1:-600}
build=${2:-build}
src=$(cd "$(dirname "$0")/../.." && pwd)
out=$build/fuzz
mkdir -p "$out/corpus"
command -v clang++ >/dev/null || { echo "run_onnx_fuzzer.sh: needs clang++ (apt install clang)" >&2; exit 1; }
[ -f "$build/libcandela.a" ] || { echo "run_onnx_fuzzer.sh: build first (make build)" >&2; exit 1; }
defs="-DONNX_ML=1 -DONNX_NAMESPACE=onnx -D_GLIBCXX_USE_CXX11_ABI=1"
incs="-I$src/include -I$src/src -isystem /usr/include/opencv4 -isystem /usr/include/torch/csrc/api/include"
clang++ -std=c++17 -O1 -g -fsanitize=fuzzer-no-link,address $defs $incs -c "$src/src/candela/onnx/importer.cpp" -o "$out/importer.o"
clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address $defs $incs -c "$src/tests/fuzz/onnx_import_fuzzer.cpp" -o "$out/harness.o"
lib=/usr/lib/x86_64-linux-gnu
clang++ -fsanitize=fuzzer,address "$out/harness.o" "$out/importer.o" "$build/libcandela.a" \
  $lib/libtorch.so -Wl,--no-as-needed,$lib/libtorch_cpu.so -Wl,--as-needed $lib/libc10.so -lpthread -fopenmp \
  -lopencv_core -lopencv_imgproc -lopencv_imgcodecs -lopencv_ml -lopencv_ximgproc -lonnx -lonnx_proto -lprotobuf \
  -o "$out/onnx_import_fuzzer"
# Seeds: the fixtures' ONNX files (the 46 MB resnet18 left out) and some operator tests.
find "$build/fixtures" -name '*.onnx' -size -1000k -exec cp {} "$out/corpus/" \;
for t in test_slice test_gather_0 test_maxpool_2d_pads test_conv_with_autopad_same test_reshape_negative_dim \
         test_resize_upsample_scales_linear test_softmax_axis_0 test_squeeze test_batchnorm_epsilon; do
  [ -f /usr/share/libonnx-testdata/data/node/$t/model.onnx ] && cp /usr/share/libonnx-testdata/data/node/$t/model.onnx "$out/corpus/$t.onnx"
done
cd "$out" && ./onnx_import_fuzzer -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=20 -max_len=65536 corpus
