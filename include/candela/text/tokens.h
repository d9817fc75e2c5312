// Token inputs and token-level results: reading text or token ids for a model whose input
// layout is NL, reducing an embedding-layer attribution [N, L, D] to one value per token,
// merging WordPiece pieces into words, and showing the result as highlighted text.
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

// Checks the text options: reduction sum|l2, aggregate token|word, word_reduction sum|mean|max.
void validate_token_options(const std::string& reduction, const std::string& aggregate,
                            const std::string& word_reduction);

}  // namespace candela
