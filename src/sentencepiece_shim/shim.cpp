// Candela's SentencePiece shim: libsentencepiece behind candela::detail::SpmModel, dlopened with
// RTLD_DEEPBIND (see src/candela/detail/sentencepiece_api.h for why).
#include <sentencepiece_processor.h>

#include "candela/detail/sentencepiece_api.h"

namespace {

class Model final : public candela::detail::SpmModel {
 public:
  sentencepiece::SentencePieceProcessor sp;

  bool encode(const std::string& text, std::vector<candela::detail::SpmPiece>& pieces,
              std::string& error) const override {
    sentencepiece::ImmutableSentencePieceText spt;
    const auto status = sp.Encode(text, spt.mutable_proto());
    if (!status.ok()) {
      error = status.ToString();
      return false;
    }
    pieces.clear();
    for (size_t k = 0; k < spt.pieces_size(); ++k) {
      const auto p = spt.pieces(static_cast<int>(k));
      pieces.push_back({static_cast<int>(p.id()), p.piece(), p.surface()});
    }
    return true;
  }
  std::string decode(const std::vector<int>& ids) const override { return sp.DecodeIds(ids); }
  int size() const override { return sp.GetPieceSize(); }
  int piece_to_id(const std::string& piece) const override { return sp.PieceToId(piece); }
  const std::string& id_to_piece(int id) const override { return sp.IdToPiece(id); }
  bool is_control(int id) const override { return sp.IsControl(id); }
  int unk_id() const override { return sp.unk_id(); }
  int bos_id() const override { return sp.bos_id(); }
  int eos_id() const override { return sp.eos_id(); }
  int pad_id() const override { return sp.pad_id(); }
};

}  // namespace

extern "C" __attribute__((visibility("default"))) candela::detail::SpmModel* candela_sentencepiece_load(
    const char* data, std::size_t size, std::string* error) {
  auto m = new Model;
  const auto status = m->sp.LoadFromSerializedProto(std::string_view(data, size));
  if (!status.ok()) {
    *error = status.ToString();
    delete m;
    return nullptr;
  }
  return m;
}
