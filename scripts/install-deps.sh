#!/usr/bin/env bash
# Installs what Candela needs to build, test and run the demo on Debian 12.
# Idempotent: does nothing (and needs no network) when everything is present.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config ccache
  libtorch-dev python3-torch python3-torchvision python3-numpy python3-sklearn python3-pytest
  libopenblas0-openmp
  libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev libopencv-ml-dev libopencv-contrib-dev
  nlohmann-json3-dev libcli11-dev libcpp-httplib-dev libboost-dev
  libonnx-dev libprotobuf-dev libonnx-testdata python3-onnx
  libgtest-dev libgmock-dev libbenchmark-dev
  libsentencepiece-dev python3-sentencepiece
  pybind11-dev python3-dev python3-distributed python3-matplotlib python3-pil
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# The web UI: node and npm (any packaging: Debian's or NodeSource's, which bundles npm) and
# Debian's chromium for its tests (playwright-core drives it; no browser downloads).
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v chromium >/dev/null || missing+=(chromium)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root or install sudo" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
