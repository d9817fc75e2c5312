#include "candela/io/csv.h"

#include <ATen/ATen.h>

#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>
#include <string_view>
#include <system_error>

#include "candela/core/error.h"
#include "candela/io/file.h"

namespace candela {
namespace {

struct Cell {
  std::string text;
  bool quoted = false;
};
struct Record {
  std::vector<Cell> cells;
  int64_t line = 0;  // 1-based line where the record starts
};

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// Splits the text into records of cells. Quoted cells may hold commas, newlines and ""
// (a quote); outside quotes a quote is an ordinary character.
std::vector<Record> split_records(std::string_view text, const std::string& name) {
  std::vector<Record> records;
  size_t i = 0;
  int64_t line = 1;
  while (i < text.size()) {
    Record rec;
    rec.line = line;
    bool end_of_record = false;
    while (!end_of_record) {
      Cell cell;
      // Leading blanks before an opening quote are ignored.
      size_t j = i;
      while (j < text.size() && (text[j] == ' ' || text[j] == '\t')) ++j;
      if (j < text.size() && text[j] == '"') {
        cell.quoted = true;
        const int64_t start_line = line;
        i = j + 1;
        for (;;) {
          CANDELA_CHECK_T(ParseError, i < text.size(), "'", name, "': unterminated quote in the cell starting at line ",
                          start_line, "; close it with a \" (write \"\" for a quote inside a quoted cell).");
          if (text[i] == '"') {
            if (i + 1 < text.size() && text[i + 1] == '"') {
              cell.text += '"';
              i += 2;
              continue;
            }
            ++i;
            break;
          }
          if (text[i] == '\n') ++line;
          cell.text += text[i++];
        }
        // Only blanks may follow the closing quote.
        while (i < text.size() && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r')) ++i;
        CANDELA_CHECK_T(ParseError, i >= text.size() || text[i] == ',' || text[i] == '\n', "'", name,
                        "': unexpected text after the closing quote at line ", line,
                        "; put the whole cell inside the quotes.");
      } else {
        size_t k = i;
        while (k < text.size() && text[k] != ',' && text[k] != '\n') ++k;
        cell.text = std::string(trim(text.substr(i, k - i)));
        i = k;
      }
      rec.cells.push_back(std::move(cell));
      if (i >= text.size()) {
        end_of_record = true;
      } else if (text[i] == ',') {
        ++i;
      } else {  // '\n'
        ++i;
        ++line;
        end_of_record = true;
      }
    }
    const bool blank = rec.cells.size() == 1 && !rec.cells[0].quoted && rec.cells[0].text.empty();
    if (!blank) records.push_back(std::move(rec));
  }
  return records;
}

enum class Parsed { kNumber, kEmpty, kNotANumber, kNonFinite, kOutOfRange };

Parsed parse_number(const Cell& cell, float& out) {
  std::string_view s = trim(cell.text);
  if (s.empty()) return Parsed::kEmpty;
  std::string_view body = s;
  if (body.front() == '+') body.remove_prefix(1);
  double v = 0;
  auto [ptr, ec] = std::from_chars(body.data(), body.data() + body.size(), v);
  if (ptr != body.data() + body.size() || body.empty()) return Parsed::kNotANumber;
  if (ec == std::errc::result_out_of_range) return Parsed::kOutOfRange;
  if (ec != std::errc()) return Parsed::kNotANumber;
  if (!std::isfinite(v)) return Parsed::kNonFinite;
  if (std::abs(v) > static_cast<double>(std::numeric_limits<float>::max())) return Parsed::kOutOfRange;
  out = static_cast<float>(v);
  return Parsed::kNumber;
}

}  // namespace

Table parse_csv(const std::string& text_in, const std::string& name) {
  std::string_view text = text_in;
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);  // UTF-8 byte order mark
  std::vector<Record> records = split_records(text, name);
  CANDELA_CHECK_T(ParseError, !records.empty(), "'", name, "' is empty; a CSV table needs an optional header row ",
                  "and at least one row of comma-separated numbers.");

  // The first row is a header when any of its cells is not a number (NaN and inf count as
  // numbers here, so that a first data row holding them is reported as such).
  const Record& first = records.front();
  bool header = false;
  for (const auto& c : first.cells) {
    float v;
    Parsed p = parse_number(c, v);
    if (p == Parsed::kNotANumber) header = true;
  }
  const size_t cols = first.cells.size();
  Table table;
  if (header) {
    for (size_t j = 0; j < cols; ++j) {
      std::string col(trim(first.cells[j].text));
      CANDELA_CHECK_T(ParseError, !col.empty(), "'", name, "': the header (line ", first.line, ") has no name for ",
                      "column ", j + 1, "; name every column or remove the header row.");
      table.columns.push_back(std::move(col));
    }
  } else {
    for (size_t j = 0; j < cols; ++j) table.columns.push_back(detail::str_cat("f", j));
  }
  const size_t begin = header ? 1 : 0;
  const int64_t rows = static_cast<int64_t>(records.size() - begin);
  CANDELA_CHECK_T(ParseError, rows > 0, "'", name, "' has a header (line ", first.line, ") but no data rows; ",
                  "add rows of numbers below it.");

  auto column = [&](size_t j) {
    return header ? detail::str_cat("column '", table.columns[j], "'") : detail::str_cat("column ", j + 1);
  };
  at::Tensor values = at::empty({rows, static_cast<int64_t>(cols)}, at::kFloat);
  float* out = values.data_ptr<float>();
  for (size_t r = begin; r < records.size(); ++r) {
    const Record& rec = records[r];
    CANDELA_CHECK_T(ParseError, rec.cells.size() == cols, "'", name, "': line ", rec.line, " has ", rec.cells.size(),
                    " cell", rec.cells.size() == 1 ? "" : "s", " but line ", first.line,
                    header ? " (the header)" : "", " has ", cols, "; every row needs the same number of ",
                    "comma-separated cells (quote header names that contain commas).");
    for (size_t j = 0; j < cols; ++j) {
      const Cell& cell = rec.cells[j];
      switch (parse_number(cell, *out++)) {
        case Parsed::kNumber:
          break;
        case Parsed::kEmpty:
          throw ParseError(detail::str_cat("'", name, "': missing value at line ", rec.line, ", ", column(j),
                                           "; fill or drop it."));
        case Parsed::kNonFinite:
          throw ParseError(detail::str_cat("'", name, "': non-finite value '", cell.text, "' at line ", rec.line,
                                           ", ", column(j), "; replace it with a finite number or drop the row."));
        case Parsed::kOutOfRange:
          throw ParseError(detail::str_cat("'", name, "': value '", cell.text, "' at line ", rec.line, ", ",
                                           column(j), " is outside the range of float32; rescale the column."));
        case Parsed::kNotANumber:
          throw ParseError(detail::str_cat("'", name, "': '", cell.text, "' at line ", rec.line, ", ", column(j),
                                           " is not a number; data cells must be numbers (encode categories as ",
                                           "integers, remove units and thousands separators)."));
      }
    }
  }
  table.values = values;
  return table;
}

Table read_csv(const std::string& path) { return parse_csv(read_file(path, kMaxCsvFileBytes), path); }

}  // namespace candela
