// Force-included (-include) when run_fuzzer.sh compiles library sources with clang 14 as C++17
// (clang 14 cannot compile LibTorch 1.13's headers as C++20, while the library is C++20):
// the few C++20 library names those sources use, so the real files compile unchanged.
#pragma once

#if __cplusplus < 202002L
#include <bit>
#if !defined(__cpp_lib_endian)
namespace std {  // what C++20's <bit> declares (npy.cpp checks the host byte order with it)
enum class endian { little = __ORDER_LITTLE_ENDIAN__, big = __ORDER_BIG_ENDIAN__, native = __BYTE_ORDER__ };
}  // namespace std
#endif
#endif
