// The interface between Candela and its SentencePiece shim (src/sentencepiece_shim/shim.cpp).
//
// Why a shim: Debian's libsentencepiece.so carries its own copy of protobuf-lite 3.14 and exports
// its symbols, while LibTorch and libonnx bring libprotobuf 3.21. Linked into one program, the
// first definition wins, and SentencePiece's model parser then runs on the other protobuf and
// aborts ("compiled against version 3.14.0 ... installed version (3.21.12)"). So Candela does not
// link libsentencepiece: it dlopens this small shim (which does) with RTLD_DEEPBIND, so that the
// shim and libsentencepiece resolve their symbols among themselves first. Across the boundary go
// only virtual calls and standard-library types (one libstdc++ serves both sides); no exceptions.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace candela::detail {

struct SpmPiece {
  int id = 0;
  std::string piece;    // as sp.encode(text, out_type=str) gives it (an unknown character as itself)
  std::string surface;  // the original text it covers
};

class SpmModel {
 public:
  virtual ~SpmModel() = default;
  // False (and the processor's message in `error`) when the text cannot be encoded.
  virtual bool encode(const std::string& text, std::vector<SpmPiece>& pieces, std::string& error) const = 0;
  virtual std::string decode(const std::vector<int>& ids) const = 0;
  virtual int size() const = 0;
  virtual int piece_to_id(const std::string& piece) const = 0;  // the unknown id when absent
  virtual const std::string& id_to_piece(int id) const = 0;
  virtual bool is_control(int id) const = 0;
  virtual int unk_id() const = 0;
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
  virtual int pad_id() const = 0;
};

// The shim's one exported function: a model from a .model file's bytes, or null with `error` set.
using SpmLoadFn = SpmModel* (*)(const char* data, std::size_t size, std::string* error);
inline constexpr const char* kSpmLoadSymbol = "candela_sentencepiece_load";

}  // namespace candela::detail
