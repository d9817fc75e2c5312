#!/usr/bin/env bash
# Builds one libFuzzer target and runs it (default 10 minutes).
#
#   make build && tests/fuzz/run_fuzzer.sh TARGET [SECONDS] [BUILD_DIR]
#
# TARGET  what it feeds the bytes to                               clang-instrumented sources
#   onnx        detail::import_onnx_bytes (onnx_import_fuzzer.cpp)  onnx/*.cpp
#   npy         parse_npy                                           io/npy.cpp
#   csv         parse_csv                                           io/csv.cpp
#   image       load_image (OpenCV's decoders), via an in-memory file; also checks that OpenCV
#               leaves no temporary file behind (CANDELA_FUZZ_IGNORE_TEMP_LEAK=1: don't)
#                                                                   io/image.cpp io/file.cpp
#   sidecar     a model.json sidecar: InputSpec::from_json, classes, output kind
#                                                                   core/model.cpp core/error.cpp
#   composite   LRP composite JSON: Composite::from_json            methods/propagation/lrp_rules.cpp
#                                                                   methods/propagation/rule_graph.cpp core/error.cpp
#   text_forms  flag text: Baseline::parse, Target::parse, parse_option_value (+ the method's
#               creation), make_feature_mask; the first byte picks one (see fuzz_targets.h)
#                                                                   core/target.cpp core/baseline.cpp core/options.cpp
#                                                                   core/error.cpp core/registry.cpp methods/perturbation/feature_mask.cpp
# The harnesses' feed functions are in tests/fuzz/fuzz_targets.h, shared with the regression
# test tests/unit/test_fuzz_regressions.cpp.
#
# (Each with the rest of its unity group, see below.) Only those sources and the harness are
# compiled by clang, with coverage and AddressSanitizer,
# as C++17 (clang 14 cannot compile LibTorch 1.13's headers as C++20; tests/fuzz/cxx17_compat.h
# supplies the C++20 names the sources use); the rest of the library comes from the normal GCC
# build's libcandela.a, uninstrumented: no coverage feedback and no ASan checks inside it, nor
# inside LibTorch, OpenCV or the image codec libraries (ASan still sees their malloc/free).
#
# The corpus (build/fuzz/TARGET/corpus) is seeded with small valid inputs and with
# tests/fuzz/regressions/TARGET/seed_*; tests/fuzz/dict/TARGET.dict is the dictionary. Findings
# (crash-*, leak-*, oom-*, timeout-*) are written to build/fuzz/TARGET/; the last line printed
# is the run's executions and coverage. Environment:
#   CANDELA_FUZZ_STRICT=1  also abort on a refusal that is not a candela::Error and on a failed
#                          invariant (round trips, shapes): see fuzz_main.h
#   FUZZ_ARGS              more libFuzzer flags, e.g. FUZZ_ARGS="-only_ascii=1 -jobs=2"
#   FUZZ_ALLOW_STALE=1     link even when libcandela.a is older than the library's sources
#   CXX                    the clang++ to use (default clang++)
set -euo pipefail
usage="usage: $0 {onnx|npy|csv|image|sidecar|composite|text_forms} [SECONDS] [BUILD_DIR]"
target=${1:?$usage}
seconds=${2:-600}
build=${3:-build}
src=$(cd "$(dirname "$0")/../.." && pwd)
fz=$src/tests/fuzz
cxx=${CXX:-clang++}

harness=$fz/${target}_fuzzer.cpp
case $target in
  onnx)
    harness=$fz/onnx_import_fuzzer.cpp
    sources="onnx/importer.cpp"; max_len=65536 ;;
  npy) sources="io/npy.cpp"; max_len=4096 ;;
  csv) sources="io/csv.cpp"; max_len=4096 ;;
  image) sources="io/image.cpp io/file.cpp"; max_len=16384 ;;
  sidecar) sources="core/model.cpp core/error.cpp"; max_len=4096 ;;
  composite) sources="methods/propagation/rule_graph.cpp methods/propagation/lrp_rules.cpp core/error.cpp"; max_len=4096 ;;
  text_forms) sources="core/target.cpp core/baseline.cpp core/options.cpp core/error.cpp core/registry.cpp methods/perturbation/feature_mask.cpp"; max_len=256 ;;
  *) echo "$usage" >&2; exit 2 ;;
esac

command -v "$cxx" >/dev/null || { echo "run_fuzzer.sh: needs clang++ (apt install clang)" >&2; exit 1; }
[ -f "$build/libcandela.a" ] || { echo "run_fuzzer.sh: build first (make build)" >&2; exit 1; }
build=$(cd "$build" && pwd)
newer=$(find "$src/include" "$src/src" -type f -newer "$build/libcandela.a" | head -3)
if [ -n "$newer" ] && [ "${FUZZ_ALLOW_STALE:-0}" != 1 ]; then
  echo "run_fuzzer.sh: $build/libcandela.a is older than" $newer "...: rebuild it (make build), or set" \
       "FUZZ_ALLOW_STALE=1 to link old library code with new headers anyway." >&2
  exit 1
fi

out=$build/fuzz/$target
mkdir -p "$out/obj" "$out/corpus"
defs="-DONNX_ML=1 -DONNX_NAMESPACE=onnx -D_GLIBCXX_USE_CXX11_ABI=1"
incs="-I$src/include -I$src/src -isystem /usr/include/opencv4 -isystem /usr/include/torch/csrc/api/include"
flags="-std=c++17 -O1 -g -fno-omit-frame-pointer -include $fz/cxx17_compat.h $defs $incs"

# Recompiles an object when it is missing or older than its source or a header it may include:
# the library's headers and, for the harness, tests/fuzz's (a rough make for a handful of files).
compile() {  # SOURCE OBJECT SANITIZE HEADER_DIRS...
  local source=$1 object=$2 sanitize=$3
  shift 3
  if [ -f "$object" ] && [ ! "$source" -nt "$object" ] && [ ! "$fz/cxx17_compat.h" -nt "$object" ] &&
     [ -z "$(find "$@" -name '*.h' -newer "$object" | head -1)" ]; then
    return
  fi
  echo "run_fuzzer.sh: compiling ${source#$src/}" >&2
  "$cxx" $flags -fsanitize="$sanitize" -c "$source" -o "$object"
}
# The library compiles small sources in unity groups: an instrumented source brings the rest of
# its group (listed by CMake in unity_groups.txt), or the linker would pull the archive's group
# object in as well and find those symbols defined twice.
if [ -f "$build/unity_groups.txt" ]; then
  expanded=""
  for s in $sources; do
    members=$( (grep -E "^[a-z_]+: (.* )?$s( |$)" "$build/unity_groups.txt" || true) | head -1 | cut -d: -f2)
    expanded="$expanded ${members:-$s}"
  done
  sources=$(echo $expanded | tr ' ' '\n' | awk '!seen[$0]++' | tr '\n' ' ')
fi
objs=()
for s in $sources; do
  o=$out/obj/$(echo "$s" | tr / _).o
  compile "$src/src/candela/$s" "$o" fuzzer-no-link,address "$src/include" "$src/src"
  objs+=("$o")
done
compile "$harness" "$out/obj/harness.o" fuzzer,address "$src/include" "$src/src" "$fz"
# The instrumented objects come first, so the archive's copies of those files are not pulled in.
lib=/usr/lib/x86_64-linux-gnu
"$cxx" -fsanitize=fuzzer,address "$out/obj/harness.o" "${objs[@]}" "$build/libcandela.a" \
  $lib/libtorch.so -Wl,--no-as-needed,$lib/libtorch_cpu.so -Wl,--as-needed $lib/libc10.so -lpthread -fopenmp \
  -lopencv_core -lopencv_imgproc -lopencv_imgcodecs -lopencv_ml -lopencv_ximgproc -lonnx -lonnx_proto -lprotobuf \
  -o "$out/${target}_fuzzer"

# ---- seeds: small valid inputs ----------------------------------------------------------------
corpus=$out/corpus
seed() { printf '%s' "$2" > "$corpus/$1"; }  # NAME TEXT
py=/usr/bin/python3
case $target in
  onnx)
    # The fixtures' ONNX files (the 46 MB resnet18 left out) and some operator tests.
    find "$build/fixtures" -name '*.onnx' -size -1000k -exec cp {} "$corpus/" \;
    for t in test_slice test_gather_0 test_maxpool_2d_pads test_conv_with_autopad_same test_reshape_negative_dim \
             test_resize_upsample_scales_linear test_softmax_axis_0 test_squeeze test_batchnorm_epsilon; do
      [ -f /usr/share/libonnx-testdata/data/node/$t/model.onnx ] && cp /usr/share/libonnx-testdata/data/node/$t/model.onnx "$corpus/$t.onnx"
    done ;;
  npy)
    "$py" - "$corpus" <<'EOF' || echo "run_fuzzer.sh: no numpy in $py; npy seeds only from tests/fuzz/regressions" >&2
import sys, numpy as np
d = sys.argv[1] + '/'
np.save(d + 'f4_2x3.npy', np.arange(6, dtype='<f4').reshape(2, 3))
np.save(d + 'f2_scalar.npy', np.float16(1.5))
np.save(d + 'f8_empty_0x3.npy', np.zeros((0, 3), dtype='<f8'))
np.save(d + 'i8_5.npy', np.arange(5, dtype='<i8') - 2)
np.save(d + 'i4_2x1x2.npy', np.array([[[1, 2]], [[3, 4]]], dtype='<i4'))
np.save(d + 'u1_3x2x2.npy', np.arange(12, dtype='u1').reshape(3, 2, 2))
np.save(d + 'i1_4.npy', np.array([-1, 0, 1, 127], dtype='i1'))
np.save(d + 'b1_3.npy', np.array([True, False, True]))
np.save(d + 'fortran_1d.npy', np.asfortranarray(np.arange(3, dtype='<f4')))
with open(d + 'v2_f4_2.npy', 'wb') as f:
    np.lib.format.write_array(f, np.ones(2, dtype='<f4'), version=(2, 0))
with open(d + 'v3_i2_2.npy', 'wb') as f:
    np.lib.format.write_array(f, np.ones(2, dtype='<i2'), version=(3, 0))
EOF
    ;;
  csv)
    seed header.csv $'a,b,c\n1,2,3\n4,5,6\n'
    seed no_header.csv $'1.5,-2,3e2\n0,+1,.5\n'
    seed quoted.csv $'"x, y","say ""hi""",z\n1,2,3\n'
    seed crlf_bom.csv $'\xef\xbb\xbfa,b\r\n1,2\r\n\r\n3,4\r\n'
    seed one_cell.csv $'7\n' ;;
  image)
    for f in digit_0.png digit_1.png; do [ -f "$build/fixtures/$f" ] && cp "$build/fixtures/$f" "$corpus/"; done
    # Small files in each format OpenCV decodes, from the 224x224 fixture when there is one.
    "$py" - "$corpus" "$build/fixtures/sample_224.png" <<'EOF' || echo "run_fuzzer.sh: no PIL in $py; image seeds only from the fixtures" >&2
import os, sys
from PIL import Image
d, sample = sys.argv[1] + '/', sys.argv[2]
img = (Image.open(sample).convert('RGB') if os.path.exists(sample) else Image.new('RGB', (32, 32), (200, 30, 90)))
small = img.resize((12, 10))
import numpy as np
saves = [
    ('rgb.png', lambda p: small.save(p)),
    ('rgba.png', lambda p: small.convert('RGBA').save(p)),
    ('palette.png', lambda p: small.convert('P').save(p)),
    ('grey.png', lambda p: small.convert('L').save(p)),
    ('grey16.png', lambda p: Image.fromarray(np.asarray(small.convert('L'), dtype='<u2') * 257, 'I;16').save(p)),
    ('rgb.jpg', lambda p: small.save(p, quality=75)),
    ('grey.jpg', lambda p: small.convert('L').save(p, quality=75)),
    ('progressive.jpg', lambda p: small.save(p, quality=60, progressive=True)),
    ('rgb.bmp', lambda p: small.save(p)),
    ('rgb.ppm', lambda p: small.save(p)),
    ('grey.pgm', lambda p: small.convert('L').save(p)),
    ('rgb.tiff', lambda p: small.save(p)),
    ('rgb.webp', lambda p: small.save(p, quality=60)),
]
for name, save in saves:
    try:
        save(d + name)
    except Exception as e:
        print('run_fuzzer.sh: no seed', name, '(', e, ')', file=sys.stderr)
try:  # EXIF orientation 6 (rotate 90), which load_image applies
    exif = Image.Exif()
    exif[0x0112] = 6
    small.save(d + 'exif_rotated.jpg', quality=70, exif=exif.tobytes())
except Exception as e:
    print('run_fuzzer.sh: no seed exif_rotated.jpg (', e, ')', file=sys.stderr)
EOF
    ;;
  sidecar)
    # The fixtures' sidecars: <stem>.json next to a <stem>.pt or <stem>.onnx.
    for j in "$build"/fixtures/*.json; do
      stem=${j%.json}
      if { [ -f "$stem.pt" ] || [ -f "$stem.onnx" ]; } && [ "$(stat -c %s "$j")" -le "$max_len" ]; then cp "$j" "$corpus/"; fi
    done
    seed full.json '{"input": {"shape": [3, 4, 4], "layout": "NCHW", "mean": [0.5], "std": [0.25, 0.5, 1], "range": [-1, 1]}, "classes": ["a", "b"], "feature_names": ["x"], "output": "probabilities"}'
    seed tokens.json '{"input": {"shape": [16], "layout": "NL"}, "output": "regression"}'
    seed empty.json '{}' ;;
  composite)
    seed builtin_like.json '{"name": "epsilon_plus", "rules": [{"type": "conv", "rule": "z_plus"}, {"type": "linear", "rule": "epsilon", "epsilon": 1e-6}]}'
    seed flat_first.json '{"rules": [{"type": "affine", "first": true, "rule": "flat"}, {"type": "conv", "rule": "alpha_beta", "alpha": 2, "beta": 1}, {"rule": "epsilon"}]}'
    seed zbox.json '{"rules": [{"type": "conv", "first": true, "rule": "z_box", "low": -3, "high": 3}, {"type": "conv", "rule": "gamma", "gamma": 0.25, "stabilizer": 1e-6}, {"type": "linear", "rule": "epsilon"}]}'
    seed paths.json '{"name": "mine", "rules": [{"path": "features.*", "rule": "epsilon", "epsilon": 0.5}, {"path": "classifier.3", "rule": "w_square", "zero_bias": true}, {"rule": "pass"}, {"rule": "gradient"}, {"rule": "zero"}]}' ;;
  text_forms)
    # First byte: 0 baseline, 1 target, 2 METHOD.KEY=VALUE option, 3/7/; feature mask (NCHW/NHWC/tabular).
    i=0
    for t in 0zeros 0constant:0.5 0blur:2 0blur 0uniform:0,1 0uniform \
             1top1 13 12,0 1cat 1dog,zebra 1element:1 1region:1:0,0,2,2 \
             2integrated_gradients.n_steps=32 2integrated_gradients.method=riemann_trapezoid 2saliency.abs=yes \
             2lime.hide_color=0.1,0.2 2grad_cam.layers=layer3,layer4 2occlusion.sliding_window_shapes=3,4,4 \
             '2noise_tunnel.base_options={"abs":false}' 2lrp.composite=epsilon_plus 2lrp.low=-1,-2,-3 \
             2rise.p1=0.25 2neuron_gradient.neuron_selector=3,1,1 2kernel_shap.target_error=0.01 \
             3each 3grid:4 3slic:4 3felzenszwalb:100 7grid:2 7slic:3 ';each'; do
      seed "form_$i" "$t"; i=$((i + 1))
    done ;;
esac
# The regression folder's seeds; its crash inputs are left out, or a bug not fixed yet would stop
# every run at once (tests/unit/test_fuzz_regressions.cpp replays them all).
cp "$fz/regressions/$target"/seed_* "$corpus/" 2>/dev/null || true

# ---- run --------------------------------------------------------------------------------------
dict=()
[ -f "$fz/dict/$target.dict" ] && dict=(-dict="$fz/dict/$target.dict")
echo "run_fuzzer.sh: fuzzing $target for $seconds s (corpus $corpus, $(ls "$corpus" | wc -l) files)" >&2
# Temporary files of the run (the image target's OpenCV folder) stay under $out/tmp.
rm -rf "$out/tmp" && mkdir -p "$out/tmp"
set +e
(cd "$out" && TMPDIR="$out/tmp" "./${target}_fuzzer" -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=20 -max_len="$max_len" \
   -artifact_prefix="$out/" -print_final_stats=1 "${dict[@]}" ${FUZZ_ARGS:-} corpus) 2>&1 </dev/null | tee "$out/fuzz.log"
rc=${PIPESTATUS[0]}
set -e
rm -rf "$out/tmp"
done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$out/fuzz.log" | tail -1 || true)
findings=$(cd "$out" && ls -1 crash-* leak-* oom-* timeout-* slow-unit-* 2>/dev/null | tr '\n' ' ' || true)
echo "== $target: exit $rc; ${done_line:-no DONE line (stopped early: see $out/fuzz.log)}"
echo "== $target: findings: ${findings:-none} (in $out)"
exit "$rc"
