// NumPy .npy files (format versions 1.0, 2.0 and 3.0), the exchange format for attributions,
// baselines and inputs. Hand-written: the format is small, and a reader of user files must
// check every header field against the real file size before trusting it.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace candela {

// The largest .npy file read_npy accepts (16 GiB): a guard against exhausting memory.
inline constexpr size_t kMaxNpyFileBytes = size_t{1} << 34;

// Reads a little-endian, C-ordered .npy file into a contiguous CPU tensor of the matching dtype.
// Supported dtypes: '<f2' '<f4' '<f8' '|i1' '<i2' '<i4' '<i8' '|u1' '|b1' (for one-byte types
// '<', '|' and '=' are accepted). Throws IoError when the file cannot be read and ParseError,
// saying what is wrong and how to re-save it, when its content is not a valid array.
at::Tensor read_npy(const std::string& path);

// Parses the bytes of a .npy file; `name_for_errors` (usually the path) names it in messages.
at::Tensor parse_npy(const std::string& bytes, const std::string& name_for_errors);

// The bytes of a version 1.0 .npy file holding `t` (any device or layout; it is copied to a
// contiguous CPU tensor). Dtypes: float16/32/64, int8/16/32/64, uint8, bool; others throw
// InvalidArgument.
std::string npy_bytes(const at::Tensor& t);

// npy_bytes written with write_file_atomic.
void write_npy(const std::string& path, const at::Tensor& t);

}  // namespace candela
