// Numeric CSV tables: training rows for LIME's tabular statistics, data sets for global
// surrogates, inputs given as a spreadsheet. Comma separated; the first row is a header
// when any of its cells is not a number; header names may be quoted ("a, b" with the
// comma, "" for a quote). Every data cell must be a finite number.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <string>
#include <vector>

namespace candela {

// The largest CSV file read_csv accepts (4 GiB): a guard against exhausting memory.
inline constexpr size_t kMaxCsvFileBytes = size_t{1} << 32;

struct Table {
  at::Tensor values;                 // float32 [rows, cols]
  std::vector<std::string> columns;  // header names, or f0..f{cols-1} without a header
};

// Reads `path`. Throws IoError when the file is missing or unreadable, and ParseError,
// naming the file, the line and the column and saying how to fix it, when it is empty,
// has no data rows, has rows of different lengths, an empty cell, a cell that is not a
// number, a NaN or infinite value, or a value outside float32's range.
Table read_csv(const std::string& path);

// The same on the text of a CSV file; `name_for_errors` names it in messages.
Table parse_csv(const std::string& text, const std::string& name_for_errors);

}  // namespace candela
