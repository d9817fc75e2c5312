#include "candela/io/npy.h"

#include <ATen/ATen.h>

#include <array>
#include <bit>
#include <cstring>
#include <limits>
#include <string_view>
#include <vector>

#include "candela/core/error.h"
#include "candela/io/file.h"

namespace candela {
namespace {

// Data bytes are copied verbatim, which is only right where the host matches the files.
static_assert(std::endian::native == std::endian::little, "the .npy reader assumes a little-endian host");

constexpr std::string_view kMagic = "\x93NUMPY";
constexpr size_t kMaxDims = 64;  // numpy 2's limit; numpy 1 allows 32
constexpr char kResave[] = " Re-save it with numpy.save.";

struct DtypeInfo {
  char kind;  // numpy's kind letter: f, i, u, b
  int size;   // bytes per element
  at::ScalarType type;
};
constexpr std::array<DtypeInfo, 9> kDtypes = {{{'f', 2, at::kHalf},
                                               {'f', 4, at::kFloat},
                                               {'f', 8, at::kDouble},
                                               {'i', 1, at::kChar},
                                               {'i', 2, at::kShort},
                                               {'i', 4, at::kInt},
                                               {'i', 8, at::kLong},
                                               {'u', 1, at::kByte},
                                               {'b', 1, at::kBool}}};

std::string descr_of(const DtypeInfo& d) { return detail::str_cat(d.size == 1 ? '|' : '<', d.kind, d.size); }

std::string supported_dtypes() {
  std::string s;
  for (const auto& d : kDtypes) s += (s.empty() ? "'" : " '") + descr_of(d) + "'";
  return s;
}

std::string shape_repr(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += detail::str_cat(i ? ", " : "", shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

struct Header {
  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;
};

// Parses the Python dict literal numpy writes, e.g. {'descr': '<f4', 'fortran_order': False,
// 'shape': (2, 3), }. Only the literal forms numpy produces are accepted; the text is hostile
// input, so nothing here evaluates it or trusts a number before range-checking it.
class HeaderParser {
 public:
  HeaderParser(std::string_view text, const std::string& name) : text_(text), name_(name) {}

  Header parse() {
    Header h;
    bool seen_descr = false, seen_order = false, seen_shape = false;
    expect('{');
    while (skip_ws(), peek() != '}') {
      std::string key = parse_string();
      expect(':');
      skip_ws();
      if (key == "descr" && !seen_descr) {
        if (peek() == '[') {
          throw ParseError(
              detail::str_cat("cannot read '", name_, "': structured (record) dtypes are not supported. ",
                              "Save each field as a plain array, e.g. numpy.save(path, a['x'].astype('float32'))."));
        }
        h.descr = parse_string();
        seen_descr = true;
      } else if (key == "fortran_order" && !seen_order) {
        h.fortran_order = parse_bool();
        seen_order = true;
      } else if (key == "shape" && !seen_shape) {
        h.shape = parse_shape();
        seen_shape = true;
      } else {
        fail(detail::str_cat("unexpected or repeated key '", key, "'"));
      }
      skip_ws();
      if (peek() == ',')
        ++pos_;
      else if (peek() != '}')
        fail("expected ',' or '}'");
    }
    ++pos_;
    skip_ws();
    if (pos_ != text_.size()) fail("unexpected text after '}'");
    if (!seen_descr || !seen_order || !seen_shape) {
      fail("it must have the keys 'descr', 'fortran_order' and 'shape'");
    }
    return h;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw ParseError(detail::str_cat("cannot read '", name_, "': its .npy header is not valid (", what,
                                     " at character ", pos_, " of the header).", kResave));
  }
  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  void skip_ws() {
    while (pos_ < text_.size() &&
           (text_[pos_] == ' ' || text_[pos_] == '\n' || text_[pos_] == '\t' || text_[pos_] == '\r'))
      ++pos_;
  }
  void expect(char c) {
    skip_ws();
    if (peek() != c) fail(detail::str_cat("expected '", c, "'"));
    ++pos_;
  }
  std::string parse_string() {
    skip_ws();
    char quote = peek();
    if (quote != '\'' && quote != '"') fail("expected a quoted string");
    size_t end = text_.find(quote, pos_ + 1);
    if (end == std::string_view::npos) fail("unterminated string");
    std::string s(text_.substr(pos_ + 1, end - pos_ - 1));
    pos_ = end + 1;
    return s;
  }
  bool parse_bool() {
    for (auto [word, value] : {std::pair{"True", true}, std::pair{"False", false}}) {
      if (text_.substr(pos_, std::strlen(word)) == word) {
        pos_ += std::strlen(word);
        return value;
      }
    }
    fail("expected True or False");
  }
  std::vector<int64_t> parse_shape() {
    std::vector<int64_t> shape;
    expect('(');
    while (skip_ws(), peek() != ')') {
      if (peek() == '-') fail("a negative dimension in 'shape'");
      if (peek() < '0' || peek() > '9') fail("expected a dimension in 'shape'");
      int64_t d = 0;
      for (; peek() >= '0' && peek() <= '9'; ++pos_) {
        if (d > (std::numeric_limits<int64_t>::max() - 9) / 10) fail("a dimension in 'shape' overflows int64");
        d = d * 10 + (peek() - '0');
      }
      if (peek() == 'L') ++pos_;  // Python 2 wrote long integers as 3L
      if (shape.size() == kMaxDims) fail(detail::str_cat("more than ", kMaxDims, " dimensions in 'shape'"));
      shape.push_back(d);
      skip_ws();
      if (peek() == ',')
        ++pos_;
      else if (peek() != ')')
        fail("expected ',' or ')' in 'shape'");
    }
    ++pos_;
    return shape;
  }

  std::string_view text_;
  const std::string& name_;
  size_t pos_ = 0;
};

const DtypeInfo& dtype_from_descr(const std::string& descr, const std::string& name) {
  auto unsupported = [&] {
    return ParseError(detail::str_cat("cannot read '", name, "': dtype '", descr,
                                      "' is not supported. Supported dtypes: ", supported_dtypes(),
                                      ". Convert it first, e.g. numpy.save(path, a.astype('float32'))."));
  };
  if (descr.size() < 3 || std::string_view("<>|=").find(descr[0]) == std::string_view::npos) {
    throw unsupported();
  }
  for (const auto& d : kDtypes) {
    if (descr.substr(1) != detail::str_cat(d.kind, d.size)) continue;
    // One-byte types have no byte order; '|' on a wider type is not something numpy writes.
    if (d.size > 1 && descr[0] == '>') {
      throw ParseError(detail::str_cat("cannot read '", name, "': dtype '", descr,
                                       "' is big-endian; Candela reads little-endian data. ",
                                       "Convert it first: numpy.save(path, a.astype(a.dtype.newbyteorder('<')))."));
    }
    if (d.size > 1 && descr[0] == '|') throw unsupported();
    return d;
  }
  throw unsupported();
}

}  // namespace

at::Tensor parse_npy(const std::string& bytes, const std::string& name) {
  if (bytes.size() < 10 || std::string_view(bytes).substr(0, kMagic.size()) != kMagic) {
    throw ParseError(detail::str_cat("cannot read '", name, "': it is not a .npy file (it does not start ",
                                     "with numpy's magic string \\x93NUMPY). Save arrays with numpy.save."));
  }
  auto byte = [&](size_t i) { return static_cast<uint8_t>(bytes[i]); };
  const int major = byte(6), minor = byte(7);
  if ((major < 1 || major > 3) || minor != 0) {
    throw ParseError(detail::str_cat("cannot read '", name, "': .npy format version ", major, ".", minor,
                                     " is not supported (only 1.0, 2.0 and 3.0).", kResave));
  }
  const size_t prefix = major == 1 ? 10 : 12;
  if (bytes.size() < prefix) {
    throw ParseError(detail::str_cat("cannot read '", name, "': file is truncated inside the header.", kResave));
  }
  size_t header_len = byte(8) | byte(9) << 8;
  if (major > 1) header_len |= size_t{byte(10)} << 16 | size_t{byte(11)} << 24;
  if (header_len > bytes.size() - prefix) {
    throw ParseError(detail::str_cat("cannot read '", name, "': the header length (", header_len,
                                     " bytes) goes beyond the end of the file (", bytes.size(), " bytes).", kResave));
  }
  Header h = HeaderParser(std::string_view(bytes).substr(prefix, header_len), name).parse();

  const DtypeInfo& dtype = dtype_from_descr(h.descr, name);
  if (h.fortran_order && h.shape.size() > 1) {
    throw ParseError(detail::str_cat("cannot read '", name, "': the array is stored in Fortran order; ",
                                     "Candela reads C order. Re-save it with ",
                                     "numpy.save(path, numpy.ascontiguousarray(a))."));
  }
  // Every product is bounded before it is formed. Zero-sized dimensions count as 1 here
  // because the tensor's strides are the products of the dimensions' sizes.
  int64_t numel = 1, span = 1;
  for (int64_t d : h.shape) {
    if (d > 1 && span > std::numeric_limits<int64_t>::max() / dtype.size / d) {
      throw ParseError(detail::str_cat("cannot read '", name, "': shape ", shape_repr(h.shape),
                                       " overflows the element count.", kResave));
    }
    span *= std::max<int64_t>(d, 1);
    numel *= d;
  }
  const size_t needed = static_cast<size_t>(numel) * dtype.size;
  const size_t found = bytes.size() - prefix - header_len;
  if (found != needed) {
    throw ParseError(detail::str_cat(
        "cannot read '", name, "': ", found < needed ? "file is truncated" : "file is longer than its header says",
        " (shape ", shape_repr(h.shape), " of '", h.descr, "' needs ", needed, " bytes of data, found ", found, ").",
        kResave));
  }

  // Bool data is read as bytes and compared with zero, so a stray byte value such as 2 becomes
  // true, as numpy treats it, instead of an invalid bool.
  auto out = at::empty(h.shape, at::TensorOptions().dtype(dtype.type == at::kBool ? at::kByte : dtype.type));
  if (needed > 0) std::memcpy(out.data_ptr(), bytes.data() + prefix + header_len, needed);
  return dtype.type == at::kBool ? out.ne(0) : out;
}

at::Tensor read_npy(const std::string& path) { return parse_npy(read_file(path, kMaxNpyFileBytes), path); }

std::string npy_bytes(const at::Tensor& tensor) {
  CANDELA_CHECK(tensor.defined(), "cannot save an undefined tensor as .npy. Pass a tensor with values.");
  CANDELA_CHECK(tensor.layout() == at::kStrided, "cannot save a ", tensor.layout(),
                " tensor as .npy. Convert it with to_dense() first.");
  const DtypeInfo* dtype = nullptr;
  for (const auto& d : kDtypes) {
    if (d.type == tensor.scalar_type()) dtype = &d;
  }
  CANDELA_CHECK(dtype != nullptr, "cannot save a ", tensor.scalar_type(),
                " tensor as .npy. Convert it to float32, float64, float16, int8/16/32/64, uint8 or bool first.");
  CANDELA_CHECK(tensor.dim() <= static_cast<int64_t>(kMaxDims), "cannot save a tensor with ", tensor.dim(),
                " dimensions as .npy: at most ", kMaxDims, " are supported. Reshape it first.");
  at::Tensor t = tensor.detach().cpu().contiguous();
  std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());

  // Byte-for-byte what numpy.save writes: the dict with sorted keys, room for the first axis to
  // grow to 21 digits (so numpy can append in place), padding to a multiple of 64 bytes, '\n'.
  std::string dict = detail::str_cat("{'descr': '", descr_of(*dtype),
                                     "', 'fortran_order': False, 'shape': ", shape_repr(shape), ", }");
  if (!shape.empty()) dict.append(21 - std::to_string(shape[0]).size(), ' ');
  const size_t pad = 64 - (kMagic.size() + 4 + dict.size() + 1) % 64;
  dict.append(pad, ' ');
  dict += '\n';
  const size_t header_len = dict.size();  // at most 64 dimensions: always fits version 1.0's 16 bits

  std::string out(kMagic);
  out += {'\x01', '\x00', static_cast<char>(header_len & 0xff), static_cast<char>(header_len >> 8)};
  out += dict;
  out.append(static_cast<const char*>(t.data_ptr()), t.numel() * dtype->size);
  return out;
}

void write_npy(const std::string& path, const at::Tensor& t) { write_file_atomic(path, npy_bytes(t)); }

}  // namespace candela
