// libFuzzer target for the ONNX importer: any byte string must give a model or a candela::Error,
// never a crash, a hang or an unbounded allocation. Run it with tests/fuzz/run_onnx_fuzzer.sh.
#include <cstddef>
#include <cstdint>
#include <string>

#include "candela/core/error.h"
#include "candela/onnx/importer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto imp = candela::detail::import_onnx_bytes(std::string(reinterpret_cast<const char*>(data), size), "/nonexistent",
                                                  "fuzz.onnx");
    (void)imp;
  } catch (const std::exception&) {
    // candela::Error (refused with a reason) or a LibTorch error compiling odd but well-formed
    // graphs: both reach the user as one line. What the fuzzer hunts is memory errors and crashes.
  }
  return 0;
}
