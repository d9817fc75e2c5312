// Token inputs and token-level results: reading text or token ids for a model whose input
// layout is NL, reducing an embedding-layer attribution [N, L, D] to one value per token,
// merging a tokenizer's pieces into words, and showing the result as highlighted text.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "candela/io/input.h"
#include "candela/text/tokenizer.h"

namespace candela {

class Model;

// A token model's input: a .npy of ids [N, L] (or [L]), a .txt file with one text per line, or
// the text itself. Text needs the model's tokenizer (its sidecar's "tokenizer"); ids are decoded
// with it when there is one (else each token is shown as "#id"). batch: the ids as float32
// (see detail::model_input); tokens: one Encoding per sample.
LoadedInput load_token_input(const std::string& input, const Model& model);

// The attention mask a tokenizer returns with its ids (as Hugging Face's do): int64 [N, L], 0 at
// the padding token, 1 elsewhere. Undefined when the model names no tokenizer or it pads with none.
at::Tensor padding_mask(const Model& model, const at::Tensor& ids);

// [N, L, D...] -> [N, L]: "sum" (the signed sum over the embedding, Captum's tutorials' choice)
// or "l2" (the L2 norm, inseq's default). [N, L] passes through.
at::Tensor reduce_embedding(const at::Tensor& values, const std::string& reduction);

// Per sample: every token with its id, value and word, and, with aggregate == "word", every word
// with its pieces' values combined by `word_reduction` (sum, mean or max) — the reduction is named
// in the output. values: [N, L].
nlohmann::json token_json(const at::Tensor& values, const std::vector<Encoding>& tokens, const std::string& aggregate,
                          const std::string& word_reduction);

// The same as highlighted text: one line per sample, each token (or word) on a diverging scale
// (blue negative, white zero, red positive), scaled by the sample's largest |value|. [PAD] is
// left out.
std::string render_tokens_html(const nlohmann::json& token_json, const std::string& title);
std::string render_tokens_ansi(const nlohmann::json& token_json);  // 24-bit terminal colours

// The vocabulary of the model's tokenizer, by id (empty when its sidecar names none). For a
// language model these are the names of its outputs, so targets can name tokens
// (logprob:POS:TOKEN, see Target::parse).
std::vector<std::string> model_vocabulary(const Model& model);

// Teacher forcing for language-model targets: a TOKEN left out (logprob:POS, contrast:POS::FOIL)
// becomes each sample's own token at POS in the input ids [N, L]. Other targets pass through.
// InvalidArgument when POS is not a position of the input.
std::string fill_target_tokens(const std::string& target, const at::Tensor& ids);

// --per-step: the inputs [N, L] repeated once per generated position t = 1..L-1 (row i*(L-1) + t-1
// is sample i at step t) and the target "logprob:POSITIONS:TOKENS" that explains, in each row,
// log p(token_t | tokens < t) with the input's own token_t.
struct PerStepRequest {
  at::Tensor inputs;   // [N * (L-1), L]
  std::string target;  // for Target::parse
  int64_t steps = 0;   // L - 1
};
PerStepRequest per_step_request(const at::Tensor& ids);

// Checks the text options: reduction sum|l2, aggregate token|word, word_reduction sum|mean|max.
void validate_token_options(const std::string& reduction, const std::string& aggregate,
                            const std::string& word_reduction);

}  // namespace candela
