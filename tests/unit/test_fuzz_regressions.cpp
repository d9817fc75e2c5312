// Replays tests/fuzz/regressions/<target>/* (each target's seed_* inputs, and every input a fuzzer
// or a probe found a bug with) through the function the libFuzzer harness of that target calls
// (tests/fuzz/fuzz_targets.h). Every input must be accepted or refused with a candela::Error; for
// the flag text forms, which also reach LibTorch and the C++ library, any std::exception is a
// refusal. A crash or a hang shows up as this test crashing or timing out; a file OpenCV leaves
// behind (LeakFound) is a failure. Fuzzing itself: tests/fuzz/run_fuzzer.sh.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <ostream>
#include <string>
#include <typeinfo>
#include <vector>

#include "fuzz/fuzz_targets.h"
#include "test_util.h"

namespace candela::fuzz {
// Names the parameter in gtest's messages.
void PrintTo(const FuzzTarget& target, std::ostream* os) { *os << target.name; }
}  // namespace candela::fuzz

namespace {

namespace fs = std::filesystem;
using candela::fuzz::FuzzTarget;

std::string regression_dir(const FuzzTarget& target) {
  return std::string(CANDELA_SOURCE_DIR) + "/tests/fuzz/regressions/" + target.name;
}

std::vector<std::string> regression_files(const std::string& dir) {
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.is_regular_file()) files.push_back(entry.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void replay(const FuzzTarget& target, const std::string& file) {
  const std::string bytes = read_bytes(file);
  try {
    target.feed(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), candela::fuzz::Checks::kCrashOnly);
  } catch (const candela::fuzz::LeakFound& e) {
    ADD_FAILURE() << file << ": " << e.what();
  } catch (const candela::Error&) {
    // refused with a reason: what the library promises
  } catch (const std::exception& e) {
    if (target.only_candela_errors)
      ADD_FAILURE() << file << ": refused with " << typeid(e).name() << ", not a candela::Error: " << e.what();
  }
}

class FuzzRegressions : public ::testing::TestWithParam<FuzzTarget> {};

TEST_P(FuzzRegressions, EveryInputIsAcceptedOrRefusedWithAnError) {
  const FuzzTarget& target = GetParam();
  const std::string dir = regression_dir(target);
  const std::vector<std::string> files = regression_files(dir);
  ASSERT_FALSE(files.empty()) << "no inputs in " << dir << " (it keeps at least the target's seed_* files)";
  for (const auto& file : files) {
    SCOPED_TRACE(file);
    EXPECT_NO_FATAL_FAILURE(replay(target, file));
  }
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzRegressions, ::testing::ValuesIn(candela::fuzz::fuzz_targets()),
                         [](const ::testing::TestParamInfo<FuzzTarget>& info) { return std::string(info.param.name); });

}  // namespace
