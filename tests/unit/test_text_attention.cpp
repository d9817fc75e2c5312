// Token inputs (WordPiece, token outputs) and the attention-graph methods: closed forms,
// independent re-derivations, the fixture's reference numbers (tests/fixtures/make_text_fixtures.py)
// and its planted ground truth.
#include <numeric>

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <queue>
#include <set>
#include <sstream>

#include "candela/detail/tensor_util.h"
#include "candela/io/file.h"
#include "candela/io/npy.h"
#include "candela/eval/metrics.h"
#include "test_util.h"

using namespace candela;
using candela::testing::fixture;

namespace {

WordPieceTokenizer small_tokenizer() {
  return WordPieceTokenizer({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "movie", "un", "##believ", "##able", "great",
                             ",", "!", "a", "##b"});
}

nlohmann::json reference() {
  std::ifstream in(fixture("text_reference.json"));
  return nlohmann::json::parse(in);
}

at::Tensor json_tensor(const nlohmann::json& j) {
  // Nested lists of numbers -> a double tensor (shape from the nesting).
  std::vector<int64_t> shape;
  const nlohmann::json* p = &j;
  while (p->is_array()) {
    shape.push_back(static_cast<int64_t>(p->size()));
    p = &(*p)[0];
  }
  std::vector<double> flat;
  std::function<void(const nlohmann::json&)> walk = [&](const nlohmann::json& x) {
    if (x.is_array()) {
      for (const auto& e : x) walk(e);
    } else {
      flat.push_back(x.get<double>());
    }
  };
  walk(j);
  return at::tensor(flat, at::kDouble).view(shape);
}

at::Tensor random_attention(int64_t n, int64_t h, int64_t l, uint64_t seed) {
  auto gen = candela::detail::seeded_generator(seed, 0);
  return at::softmax(at::randn({n, h, l, l}, gen, at::TensorOptions().dtype(at::kDouble)) * 2.0, -1);
}

// Edmonds-Karp on a dense capacity matrix: the reference for attention flow (a different
// algorithm from the library's Dinic).
double edmonds_karp(std::vector<std::vector<double>> cap, int s, int t) {
  const int n = static_cast<int>(cap.size());
  double flow = 0;
  for (;;) {
    std::vector<int> parent(n, -1);
    parent[s] = s;
    std::queue<int> q;
    q.push(s);
    while (!q.empty() && parent[t] < 0) {
      int u = q.front();
      q.pop();
      for (int v = 0; v < n; ++v)
        if (parent[v] < 0 && cap[u][v] > 1e-15) {
          parent[v] = u;
          q.push(v);
        }
    }
    if (parent[t] < 0) return flow;
    double f = 1e300;
    for (int v = t; v != s; v = parent[v]) f = std::min(f, cap[parent[v]][v]);
    for (int v = t; v != s; v = parent[v]) {
      cap[parent[v]][v] -= f;
      cap[v][parent[v]] += f;
    }
    flow += f;
  }
}

// An ONNX export's token embedding: the Gather node whose output is [1, L, D] (the position
// embedding's has no batch dimension); "" when there is none.
std::string token_embedding(const Model& onnx) {
  for (const auto& info : onnx.layers())
    if (info.type == "Gather" && info.output_shape == std::vector<int64_t>{1, 16, 32}) return info.name;
  return "";
}

at::Tensor test_ids(int64_t count) {
  return read_npy(fixture("text_test_ids.npy")).slice(0, 0, count).to(at::kFloat).contiguous();
}

}  // namespace

// ---- tokenizer -------------------------------------------------------------------------------

TEST(WordPiece, BasicPassLowercasesAndSplitsPunctuation) {
  auto t = small_tokenizer();
  EXPECT_EQ(t.basic_tokenize("The MOVIE, unbelievable!"),
            (std::vector<std::string>{"the", "movie", ",", "unbelievable", "!"}));
  EXPECT_EQ(t.basic_tokenize("  a\tb\n"), (std::vector<std::string>{"a", "b"}));
}

TEST(WordPiece, GreedyLongestMatchFirstWithContinuations) {
  auto t = small_tokenizer();
  EXPECT_EQ(t.wordpiece("unbelievable"), (std::vector<std::string>{"un", "##believ", "##able"}));
  EXPECT_EQ(t.wordpiece("ab"), (std::vector<std::string>{"a", "##b"}));
  EXPECT_EQ(t.wordpiece("abc"), (std::vector<std::string>{"[UNK]"})) << "no split: the whole word is unknown";
  EXPECT_EQ(t.wordpiece(std::string(101, 'a')), (std::vector<std::string>{"[UNK]"}));
}

TEST(WordPiece, EncodeAddsSpecialsPadsAndDecodeMergesPieces) {
  auto t = small_tokenizer();
  Encoding e = t.encode("The unbelievable movie!", 9);
  EXPECT_EQ(e.tokens, (std::vector<std::string>{"[CLS]", "the", "un", "##believ", "##able", "movie", "!", "[SEP]",
                                                "[PAD]"}));
  EXPECT_EQ(e.ids, (std::vector<int64_t>{2, 4, 6, 7, 8, 5, 11, 3, 0}));
  EXPECT_EQ(e.word_of_token, (std::vector<int64_t>{-1, 0, 1, 1, 1, 2, 3, -1, -1}));
  Encoding d = t.decode(e.ids);
  EXPECT_EQ(d.tokens, e.tokens);
  EXPECT_EQ(d.words, (std::vector<std::string>{"the", "unbelievable", "movie", "!"}));
  EXPECT_EQ(d.word_of_token, e.word_of_token);
  EXPECT_THROW(t.encode("the movie the movie the movie the movie", 6), InvalidArgument);
  EXPECT_THROW(t.decode({2, 99}), InvalidArgument);
  EXPECT_THROW(WordPieceTokenizer({"[PAD]", "a"}), ParseError);
}

// A tokenizer.json as HuggingFace writes it for a RoBERTa-style byte-level BPE, small enough to
// derive every answer by hand: "hello" and " world" merge whole; anything else stays in bytes.
nlohmann::json small_bpe_json() {
  std::vector<std::string> tokens = {"<s>", "<pad>", "</s>", "h", "e", "l", "o", "w", "r", "d", "\u0120", "'", "s", "i",
                                     "t", "a", "b", "c", "1", "2", "3", "!"};
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {"\u0120", "w"}, {"o", "r"},
      {"\u0120w", "or"}, {"\u0120wor", "l"}, {"\u0120worl", "d"}, {"i", "t"}};
  for (const auto& [a, b] : merges) tokens.push_back(a + b);
  nlohmann::json vocab = nlohmann::json::object(), merge_list = nlohmann::json::array();
  for (size_t i = 0; i < tokens.size(); ++i) vocab[tokens[i]] = i;
  for (const auto& [a, b] : merges) merge_list.push_back(a + " " + b);
  nlohmann::json added = nlohmann::json::array();
  for (int i : {0, 1, 2}) added.push_back({{"id", i}, {"content", tokens[static_cast<size_t>(i)]}, {"special", true}});
  return {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merge_list}}},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
          {"post_processor", {{"type", "RobertaProcessing"}, {"sep", {"</s>", 2}}, {"cls", {"<s>", 0}}}},
          {"added_tokens", added}};
}

TEST(Bpe, PreTokenizerFollowsGpt2sPattern) {
  using V = std::vector<std::string>;
  EXPECT_EQ(BpeTokenizer::pre_tokenize("hello world"), (V{"hello", " world"}));
  EXPECT_EQ(BpeTokenizer::pre_tokenize("it's"), (V{"it", "'s"}));
  EXPECT_EQ(BpeTokenizer::pre_tokenize("a  b"), (V{"a", " ", " b"}));  // the last space joins the word
  EXPECT_EQ(BpeTokenizer::pre_tokenize("abc123!!"), (V{"abc", "123", "!!"}));
  EXPECT_EQ(BpeTokenizer::pre_tokenize("x\n\ny"), (V{"x", "\n", "\n", "y"}));
  EXPECT_EQ(BpeTokenizer::pre_tokenize("a  "), (V{"a", "  "}));
  EXPECT_EQ(BpeTokenizer::pre_tokenize(" caf\xc3\xa9!"), (V{" caf\xc3\xa9", "!"}));
}

TEST(Bpe, MergesByRankAndEncodesWithTheTemplateAndPadding) {
  BpeTokenizer t(small_bpe_json());
  EXPECT_EQ(t.bpe("hello"), (std::vector<std::string>{"hello"}));
  EXPECT_EQ(t.bpe(" world"), (std::vector<std::string>{"\u0120world"}));
  EXPECT_EQ(t.bpe("bold"), (std::vector<std::string>{"b", "o", "l", "d"}));  // no merge applies
  EXPECT_EQ(t.text_of("\u0120world"), " world");
  Encoding e = t.encode("hello world it's", 8);
  EXPECT_EQ(e.tokens, (std::vector<std::string>{"<s>", "hello", "\u0120world", "\u0120", "it", "'", "s", "</s>"}));
  EXPECT_EQ(e.word_of_token, (std::vector<int64_t>{-1, 0, 1, 2, 2, 3, 3, -1}));
  EXPECT_EQ(e.words, (std::vector<std::string>{"hello", "world", "it", "'s"}));
  EXPECT_EQ(e.ids.front(), 0);
  EXPECT_EQ(e.ids.back(), 2);
  Encoding padded = t.encode("hello", 5);
  EXPECT_EQ(padded.tokens, (std::vector<std::string>{"<s>", "hello", "</s>", "<pad>", "<pad>"}));
  EXPECT_EQ(padded.ids[3], 1);
  // decode gives the same tokens, words and word of each token.
  for (const Encoding& x : {e, padded}) {
    Encoding d = t.decode(x.ids);
    EXPECT_EQ(d.tokens, x.tokens);
    EXPECT_EQ(d.words, x.words);
    EXPECT_EQ(d.word_of_token, x.word_of_token);
  }
  EXPECT_THROW(t.encode("hello world hello world", 4), InvalidArgument);     // longer than the model takes
  EXPECT_THROW(t.encode("caf\xc3\xa9", 0), InvalidArgument);                  // bytes it has no token for
  nlohmann::json wordpiece = small_bpe_json();
  wordpiece["model"]["type"] = "WordPiece";
  EXPECT_THROW(BpeTokenizer{wordpiece}, ParseError);
  EXPECT_THROW(TokenizerConfig::from_json({{"type", "tiktoken"}, {"vocab", "m.model"}}, "", "test"), ParseError);
}

// A model whose sidecar names a tokenizer.json reads text through it.
TEST(Bpe, TextInputThroughAModelsSidecar) {
  candela::testing::TempDir dir;
  std::filesystem::copy_file(fixture("text_bert.pt"), dir / "m.pt");
  write_file_atomic(dir / "tokenizer.json", small_bpe_json().dump());
  nlohmann::json side = nlohmann::json::parse(read_file(fixture("text_bert.json"), 1 << 20));
  side["tokenizer"] = {{"type", "bpe"}, {"vocab", "tokenizer.json"}, {"max_length", 16}};
  write_file_atomic(dir / "m.json", side.dump());
  Model model = Model::load(dir / "m.pt");
  LoadedInput in = load_token_input("hello world", model);
  ASSERT_EQ(in.batch.sizes(), (std::vector<int64_t>{1, 16}));
  ASSERT_EQ(in.tokens.size(), 1u);
  EXPECT_EQ(in.tokens[0].words, (std::vector<std::string>{"hello", "world"}));
  EXPECT_EQ(in.batch[0][1].item<int64_t>(), BpeTokenizer(small_bpe_json()).id("hello"));
  EXPECT_EQ(model_vocabulary(model).size(), small_bpe_json()["model"]["vocab"].size());
}

// ---- SentencePiece (tests/fixtures/make_spm_fixtures.py: a 120-piece unigram model and
// python3-sentencepiece's encodings) ----------------------------------------------------------

namespace {

// The fixture folder that holds the SentencePiece fixture: CANDELA_FIXTURE_DIR, or this build's
// own fixtures folder when that is another build's (CANDELA_DATA_FROM) made before the fixture.
std::string spm_fixture(const std::string& name) {
  if (std::filesystem::exists(fixture("spm_manifest.json"))) return fixture(name);
  return std::string(CANDELA_LOCAL_FIXTURE_DIR) + "/" + name;
}

// Why the SentencePiece tests cannot run here; empty when they can.
std::string spm_missing() {
#ifndef CANDELA_HAVE_SENTENCEPIECE
  return "Candela was built without SentencePiece (install libsentencepiece-dev and rebuild)";
#else
  if (!std::filesystem::exists(spm_fixture("spm_manifest.json"))) return "the SentencePiece fixture was not generated";
  auto m = nlohmann::json::parse(read_file(spm_fixture("spm_manifest.json"), 1 << 20));
  return m.value("available", false) ? "" : m.value("reason", std::string("the SentencePiece fixture is unavailable"));
#endif
}
#define CANDELA_REQUIRE_SENTENCEPIECE()                                  \
  if (const std::string why = spm_missing(); !why.empty()) GTEST_SKIP() << why

nlohmann::json spm_reference() { return nlohmann::json::parse(read_file(spm_fixture("spm_reference.json"), 1 << 20)); }

std::vector<std::string> whitespace_words(const std::string& text) {
  std::vector<std::string> words;
  std::istringstream in(text);
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

std::string error_text(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(SentencePiece, EncodesAsPythonSentencePieceDoes) {
  CANDELA_REQUIRE_SENTENCEPIECE();
  const auto ref = spm_reference();
  TokenizerConfig bare;
  bare.type = "sentencepiece";
  bare.vocab = spm_fixture("spm.model");
  bare.add_bos = bare.add_eos = false;
  auto t = Tokenizer::from_config(bare);
  EXPECT_EQ(t->size(), ref["size"].get<int64_t>());
  EXPECT_EQ(t->token(ref["pad_id"].get<int64_t>()), "<pad>");
  EXPECT_EQ(t->id("<pad>"), ref["pad_id"].get<int64_t>());
  EXPECT_EQ(t->id("<unk>"), ref["unk_id"].get<int64_t>());
  EXPECT_EQ(t->id("no such piece"), -1);
  EXPECT_THROW(t->token(t->size()), InvalidArgument);
  auto with_specials = SentencePieceTokenizer::from_config([&] {
    TokenizerConfig c = bare;
    c.add_bos = c.add_eos = true;
    return c;
  }());
  for (const auto& c : ref["cases"]) {
    const std::string text = c["text"];
    // Without special tokens: python's sp.encode(text) and sp.encode(text, out_type=str), exactly.
    Encoding e = t->encode(text, 0);
    EXPECT_EQ(e.ids, c["ids"].get<std::vector<int64_t>>()) << text;
    EXPECT_EQ(e.tokens, c["pieces"].get<std::vector<std::string>>()) << text;
    // A word per run of non-space characters (SentencePiece's "▁" marks where a space was).
    EXPECT_EQ(e.words, whitespace_words(text)) << text;
    // The defaults put the model's <s> and </s> around it.
    Encoding s = with_specials.encode(text, 0);
    std::vector<int64_t> expected{ref["bos_id"].get<int64_t>()};
    for (int64_t i : c["ids"]) expected.push_back(i);
    expected.push_back(ref["eos_id"].get<int64_t>());
    EXPECT_EQ(s.ids, expected) << text;
    EXPECT_EQ(s.tokens.front(), "<s>");
    EXPECT_EQ(s.tokens.back(), "</s>");
    EXPECT_EQ(s.word_of_token.front(), -1);
    EXPECT_EQ(s.word_of_token.back(), -1);
  }
}

TEST(SentencePiece, WordsPaddingAndDecode) {
  CANDELA_REQUIRE_SENTENCEPIECE();
  const auto ref = spm_reference();
  auto t = SentencePieceTokenizer::from_config(
      TokenizerConfig::from_json({{"type", "sentencepiece"}, {"model", "spm.model"}},
                                 std::filesystem::path(spm_fixture("spm.model")).parent_path().string(), "test"));
  const int64_t pad = ref["pad_id"];
  EXPECT_EQ(t.pad_id(), pad);
  for (const auto& c : ref["cases"]) {
    const std::string text = c["text"];
    const auto n = static_cast<int64_t>(c["ids"].size()) + 2;
    Encoding e = t.encode(text, n + 3);
    ASSERT_EQ(e.ids.size(), static_cast<size_t>(n + 3)) << text;
    for (int64_t k = n; k < n + 3; ++k) {
      EXPECT_EQ(e.ids[k], pad);
      EXPECT_EQ(e.tokens[k], "<pad>");
      EXPECT_EQ(e.word_of_token[k], -1);
    }
    // Each word's pieces are consecutive, and a word starts exactly at a piece that starts with "▁"
    // (or at the first piece).
    for (int64_t k = 1; k + 1 < n; ++k) {
      const bool starts = c["pieces"][k - 1].get<std::string>().rfind("\xe2\x96\x81", 0) == 0;
      EXPECT_EQ(e.word_of_token[k], k == 1 ? 0 : e.word_of_token[k - 1] + (starts ? 1 : 0)) << text << " @" << k;
    }
    EXPECT_THROW(t.encode(text, n - 1), InvalidArgument) << text;  // longer than the model takes: no truncation
    // decode gives back the ids, the words of each token and, for text it knows, the tokens and words.
    Encoding d = t.decode(e.ids);
    EXPECT_EQ(d.ids, e.ids);
    EXPECT_EQ(d.word_of_token, e.word_of_token) << text;
    const bool unknown = std::find(e.ids.begin(), e.ids.end(), ref["unk_id"].get<int64_t>()) != e.ids.end();
    if (!unknown) {
      EXPECT_EQ(d.tokens, e.tokens) << text;
      EXPECT_EQ(d.words, e.words) << text;
    } else {
      EXPECT_EQ(d.words.size(), e.words.size()) << text;
      EXPECT_NE(std::find(d.tokens.begin(), d.tokens.end(), "<unk>"), d.tokens.end()) << text;
    }
  }
  // The sentence with unknown characters: they are words of their own, shown as the text was.
  Encoding u = t.encode("great \xe6\x97\xa5\xe6\x9c\xac actors \xe2\x82\xac" "5", 0);
  EXPECT_EQ(u.words, (std::vector<std::string>{"great", "\xe6\x97\xa5\xe6\x9c\xac", "actors", "\xe2\x82\xac" "5"}));
  EXPECT_THROW(t.decode({t.size()}), InvalidArgument);
}

TEST(SentencePiece, ModelsWithoutBosOrPadAndBadSidecars) {
  CANDELA_REQUIRE_SENTENCEPIECE();
  const auto ref = spm_reference();
  const std::string dir = std::filesystem::path(spm_fixture("spm.model")).parent_path().string();
  // T5's layout (no <s>, no pad): the defaults put </s> after the sentence only.
  auto nopad = SentencePieceTokenizer::from_config(
      TokenizerConfig::from_json({{"type", "sentencepiece"}, {"vocab", "spm_nopad.model"}}, dir, "m.json"));
  std::vector<int64_t> expected = ref["nopad"]["ids"];
  expected.push_back(ref["nopad"]["eos_id"]);
  const std::string text = ref["cases"][0]["text"];
  EXPECT_EQ(nopad.encode(text, 0).ids, expected);
  EXPECT_EQ(nopad.encode(text, static_cast<int64_t>(expected.size())).ids, expected);  // no padding needed
  EXPECT_EQ(nopad.pad_id(), -1);
  const std::string no_pad = error_text([&] { nopad.encode(text, static_cast<int64_t>(expected.size()) + 1); });
  EXPECT_NE(no_pad.find("pad_token"), std::string::npos) << no_pad;
  EXPECT_NE(no_pad.find("spm_nopad.model"), std::string::npos) << no_pad;
  // A pad_token from the sidecar (here </s>, as Llama users do).
  auto padded = SentencePieceTokenizer::from_config(TokenizerConfig::from_json(
      {{"type", "sentencepiece"}, {"model", "spm_nopad.model"}, {"pad_token", "</s>"}, {"add_eos", false}}, dir, "m.json"));
  Encoding p = padded.encode(text, static_cast<int64_t>(expected.size()) + 1);
  EXPECT_EQ(p.ids.back(), ref["nopad"]["eos_id"].get<int64_t>());
  EXPECT_EQ(p.ids[expected.size() - 1], ref["nopad"]["eos_id"].get<int64_t>());  // padding, not an eos: add_eos is off
  EXPECT_EQ(p.word_of_token.back(), -1);
  // ALBERT's way: [CLS] and [SEP], control pieces the model does not call bos and eos.
  auto albert = SentencePieceTokenizer::from_config(TokenizerConfig::from_json(
      {{"type", "sentencepiece"}, {"model", "spm_nopad.model"}, {"bos_token", "[CLS]"}, {"eos_token", "[SEP]"}}, dir,
      "m.json"));
  std::vector<int64_t> albert_ids{ref["nopad"]["cls_id"].get<int64_t>()};
  for (int64_t i : ref["nopad"]["ids"]) albert_ids.push_back(i);
  albert_ids.push_back(ref["nopad"]["sep_id"].get<int64_t>());
  Encoding a = albert.encode(text, 0);
  EXPECT_EQ(a.ids, albert_ids);
  EXPECT_EQ(a.tokens.front(), "[CLS]");
  EXPECT_EQ(a.tokens.back(), "[SEP]");
  EXPECT_EQ(albert.decode(a.ids).word_of_token, a.word_of_token);
  EXPECT_THROW(SentencePieceTokenizer::from_config(TokenizerConfig::from_json(
                   {{"type", "sentencepiece"}, {"model", "spm_nopad.model"}, {"bos_token", "<cls>"}}, dir, "m.json")),
               ParseError);
  // Errors name the file or the field.
  const std::string missing = error_text([&] {
    Tokenizer::from_config(TokenizerConfig::from_json({{"type", "sentencepiece"}, {"model", "absent.model"}}, dir, "m.json"));
  });
  EXPECT_NE(missing.find("absent.model"), std::string::npos) << missing;
  candela::testing::TempDir tmp;
  write_file_atomic(tmp / "bad.model", "not a model");
  const std::string bad = error_text([&] {
    Tokenizer::from_config(TokenizerConfig::from_json({{"type", "sentencepiece"}, {"model", "bad.model"}}, tmp.path(), "m.json"));
  });
  EXPECT_NE(bad.find("bad.model"), std::string::npos) << bad;
  EXPECT_NE(bad.find("not a SentencePiece model"), std::string::npos) << bad;
  EXPECT_THROW(SentencePieceTokenizer::from_config(TokenizerConfig::from_json(
                   {{"type", "sentencepiece"}, {"model", "spm.model"}, {"pad_token", "[PAD]"}}, dir, "m.json")),
               ParseError);
  const std::string two = error_text([&] {
    TokenizerConfig::from_json({{"type", "sentencepiece"}, {"model", "a.model"}, {"vocab", "b.model"}}, dir, "m.json");
  });
  EXPECT_NE(two.find("m.json"), std::string::npos) << two;
  EXPECT_THROW(TokenizerConfig::from_json({{"type", "sentencepiece"}, {"model", "a.model"}, {"add_bos", "yes"}}, dir, "m"),
               ParseError);
  const std::string misspelt = error_text([&] {
    TokenizerConfig::from_json({{"type", "sentencepeice"}, {"model", "spm.model"}}, dir, "m.json");
  });
  EXPECT_NE(misspelt.find("tokenizer type 'sentencepeice' is not supported"), std::string::npos) << misspelt;
}

// Text through a model whose sidecar names the SentencePiece model: the ids the model gets are
// python's, and a perturbation explanation groups them into words. The model is linear in its
// tokens, f_c(x) = sum_t W[x_t, c] with W[i, 0] = i / 100, so ablating token t to id 0 (the zero
// baseline) changes class 0 by exactly id_t / 100.
TEST(SentencePiece, TextInputThroughAModelsSidecarAndAnExplanation) {
  CANDELA_REQUIRE_SENTENCEPIECE();
  const auto ref = spm_reference();
  candela::testing::TempDir dir;
  const int64_t length = 12, vocab = ref["size"];
  torch::jit::Module m("SpmLinear");
  m.register_parameter("weight", at::stack({at::arange(vocab, at::kFloat) / 100, -at::arange(vocab, at::kFloat) / 100}, 1),
                       false);
  m.define(R"(
def forward(self, x):
    return self.weight[x.long()].sum(1)
)");
  m.save(dir / "m.pt");
  std::filesystem::copy_file(spm_fixture("spm.model"), dir / "spm.model");
  nlohmann::json side = {{"input", {{"shape", {length}}, {"layout", "NL"}}}, {"output", "logits"},
                         {"classes", {"up", "down"}},
                         {"tokenizer", {{"type", "sentencepiece"}, {"model", "spm.model"}, {"max_length", length}}}};
  write_file_atomic(dir / "m.json", side.dump());
  Model model = Model::load(dir / "m.pt");
  EXPECT_EQ(model_vocabulary(model).size(), static_cast<size_t>(vocab));
  const auto& c = ref["cases"][1];  // "a  story   with music"
  LoadedInput in = load_token_input(c["text"].get<std::string>(), model);
  std::vector<int64_t> expected{ref["bos_id"].get<int64_t>()};
  for (int64_t i : c["ids"]) expected.push_back(i);
  expected.push_back(ref["eos_id"].get<int64_t>());
  expected.resize(length, ref["pad_id"].get<int64_t>());
  ASSERT_EQ(in.batch.sizes(), (at::IntArrayRef{1, length}));
  EXPECT_TRUE(at::equal(in.batch.to(at::kLong), at::tensor(expected, at::kLong).view({1, length})));

  ExplainJob job;
  job.model = dir / "m.pt";
  job.input = c["text"];
  job.method = "feature_ablation";
  job.target = "0";
  job.aggregate = "word";
  job.out = dir / "out";
  ExplainResult r = run(job);
  const at::Tensor values = r.attribution.values.to(at::kDouble).view({length});
  for (int64_t k = 0; k < length; ++k) EXPECT_NEAR(values[k].item<double>(), expected[k] / 100.0, 1e-6) << k;
  auto tokens = nlohmann::json::parse(read_file(dir / "out/tokens.json", 1 << 20));
  std::vector<std::string> words;
  for (const auto& w : tokens[0]["words"]) words.push_back(w["word"]);
  EXPECT_EQ(words, (std::vector<std::string>{"a", "story", "with", "music"}));
  EXPECT_NEAR(tokens[0]["words"][1]["value"].get<double>(), expected[2] / 100.0, 1e-6);  // "▁story" alone
}

TEST(SentencePiece, WithoutTheLibraryASidecarSaysHowToRebuild) {
  if (SentencePieceTokenizer::available()) GTEST_SKIP() << "this build has SentencePiece; the message is for builds without";
  TokenizerConfig c;
  c.type = "sentencepiece";
  c.vocab = "spm.model";
  const std::string why = error_text([&] { Tokenizer::from_config(c); });
  EXPECT_NE(why.find("built without SentencePiece"), std::string::npos) << why;
  EXPECT_NE(why.find("libsentencepiece-dev"), std::string::npos) << why;
}

TEST(TokenInput, TextAndIdsGiveTheSameBatchAndTokens) {
  Model model = Model::load(fixture("text_bert.pt"));
  ASSERT_EQ(model.input_spec().layout, "NL");
  ASSERT_FALSE(model.tokenizer().is_null());
  // The fixture's text lines tokenise to its ids.
  LoadedInput from_text = load_token_input(fixture("text_test_lines.txt"), model);
  LoadedInput from_ids = load_token_input(fixture("text_test_ids.npy"), model);
  ASSERT_EQ(from_text.batch.sizes(), from_ids.batch.sizes());
  EXPECT_TRUE(at::equal(from_text.batch, from_ids.batch));
  ASSERT_EQ(from_text.tokens.size(), 64u);
  EXPECT_EQ(from_text.tokens[5].tokens, from_ids.tokens[5].tokens);
  EXPECT_EQ(from_text.tokens[5].words, from_ids.tokens[5].words);
  LoadedInput one = load_token_input("This movie was GREAT!", model);
  EXPECT_EQ(one.batch.sizes(), (at::IntArrayRef{1, 16}));
  EXPECT_EQ(one.tokens[0].tokens[4], "great");
  // The model runs on the float-carried ids and tells the classes apart.
  auto out = model.forward(one.batch);
  EXPECT_EQ(out.argmax(1).item<int64_t>(), 1);
  EXPECT_EQ(model.forward(load_token_input("an awful film", model).batch).argmax(1).item<int64_t>(), 0);
}

TEST(TokenInput, ReductionsAndWordAggregationHaveClosedForms) {
  at::Tensor v = at::tensor({1.0, -2.0, 3.0, 4.0, 0.5, -0.5}, at::kDouble).view({1, 2, 3});
  EXPECT_TRUE(at::allclose(reduce_embedding(v, "sum"), at::tensor({2.0, 4.0}, at::kDouble).view({1, 2})));
  EXPECT_TRUE(at::allclose(reduce_embedding(v, "l2"),
                           at::tensor({std::sqrt(14.0), std::sqrt(16.5)}, at::kDouble).view({1, 2})));
  EXPECT_THROW(reduce_embedding(v, "mean"), InvalidArgument);
  auto t = small_tokenizer();
  Encoding e = t.encode("the unbelievable movie", 7);  // [CLS] the un ##believ ##able movie [SEP]
  at::Tensor tv = at::tensor({0.0, 1.0, 2.0, -1.0, 5.0, 3.0, 0.0}, at::kDouble).view({1, 7});
  for (auto [how, expected] : std::vector<std::pair<std::string, double>>{{"sum", 6.0}, {"mean", 2.0}, {"max", 5.0}}) {
    auto j = token_json(tv, {e}, "word", how);
    ASSERT_EQ(j[0]["words"].size(), 3u);
    EXPECT_EQ(j[0]["words"][1]["word"], "unbelievable");
    EXPECT_DOUBLE_EQ(j[0]["words"][1]["value"].get<double>(), expected) << how;
    EXPECT_EQ(j[0]["words"][1]["tokens"], (std::vector<int64_t>{2, 3, 4}));
    EXPECT_EQ(j[0]["word_reduction"], how);
  }
  auto tokens_only = token_json(tv, {e}, "token", "sum");
  EXPECT_FALSE(tokens_only[0].contains("words"));
  EXPECT_EQ(tokens_only[0]["tokens"][3]["token"], "##believ");
  const std::string html = render_tokens_html(token_json(tv, {e}, "word", "sum"), "t<1>");
  EXPECT_NE(html.find("unbelievable"), std::string::npos);
  EXPECT_NE(html.find("t&lt;1&gt;"), std::string::npos) << "titles are escaped";
  EXPECT_NE(render_tokens_ansi(tokens_only).find("\x1b[48;2;"), std::string::npos);
}

TEST(TokenInput, MetricsSeeOneValuePerTokenOfAnEmbeddingAttribution) {
  InputSpec spec;
  spec.layout = "NL";
  const at::Tensor ids = at::tensor({2, 7, 9}, at::kLong).view({1, 3});
  const at::Tensor emb = at::tensor({1.0, -2.0, 3.0, 4.0, 0.5, -0.5}, at::kDouble).view({1, 3, 2});
  const FeatureMap fm = feature_map(emb, ids, spec);
  EXPECT_FALSE(fm.image);
  EXPECT_TRUE(at::allclose(fm.values, at::tensor({-1.0, 7.0, 0.0}, at::kDouble).view({1, 3})));
  // Other layouts keep the strict check: [1, 3, 2] is not one value per feature of [1, 3].
  spec.layout = "NF";
  EXPECT_THROW(feature_map(emb, ids, spec), ShapeMismatch);
}

TEST(TokenInput, InputGradientMethodsAreRefusedWithTheFix) {
  Model model = Model::load(fixture("text_bert.pt"));
  ExplainRequest r;
  r.inputs = test_ids(2);
  try {
    Registry::builtin().create("saliency")->explain(model, r);
    FAIL() << "saliency on token ids must be refused";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("layer_integrated_gradients"), std::string::npos) << e.what();
  }
}

// ---- attention-graph arithmetic --------------------------------------------------------------

TEST(AttentionRollout, RowsAreStochasticAndEqualAPlainProduct) {
  std::vector<at::Tensor> maps = {random_attention(2, 3, 5, 1), random_attention(2, 3, 5, 2), random_attention(2, 3, 5, 3)};
  for (const std::string fusion : {"mean", "max", "min"}) {
    at::Tensor r = candela::detail::attention_rollout(maps, fusion, 0.0);
    EXPECT_TRUE(at::allclose(r.sum(-1), at::ones({2, 5}, at::kDouble), 0, 1e-12)) << fusion;
    // Reference: loops over samples, plain 2-D matmuls, heads fused by hand.
    for (int64_t s = 0; s < 2; ++s) {
      at::Tensor ref = at::eye(5, at::kDouble);
      for (const auto& m : maps) {
        at::Tensor f = fusion == "mean" ? m[s].sum(0) / 3.0
                       : fusion == "max" ? std::get<0>(m[s].max(0))
                                         : std::get<0>(m[s].min(0));
        at::Tensor a = f + at::eye(5, at::kDouble);
        a = a / a.sum(1, true);
        ref = at::matmul(a, ref);
      }
      EXPECT_TRUE(at::allclose(r[s], ref, 0, 1e-12)) << fusion;
    }
  }
  // mean fusion: the residual map is exactly 0.5 A + 0.5 I.
  at::Tensor one = candela::detail::attention_rollout({maps[0]}, "mean", 0.0);
  EXPECT_TRUE(at::allclose(one, 0.5 * maps[0].mean(1) + 0.5 * at::eye(5, at::kDouble), 0, 1e-12));
  // Discarding keeps rows stochastic and zeroes the lowest floor(25 * 0.5) = 12 entries per sample
  // (but never [0, 0]) before the identity is added; reference by a full sort.
  at::Tensor fused = maps[0].mean(1);
  at::Tensor d = candela::detail::residual_attention(fused, 0.5);
  EXPECT_TRUE(at::allclose(d.sum(-1), at::ones({2, 5}, at::kDouble), 0, 1e-12));
  for (int64_t s = 0; s < 2; ++s) {
    at::Tensor flat = fused[s].reshape({25}).clone();
    at::Tensor order = std::get<1>(flat.sort());
    for (int64_t i = 0; i < 12; ++i)
      if (order[i].item<int64_t>() != 0) flat[order[i].item<int64_t>()] = 0.0;
    at::Tensor ref = flat.view({5, 5}) + at::eye(5, at::kDouble);
    EXPECT_TRUE(at::allclose(d[s], ref / ref.sum(1, true), 0, 1e-12));
  }
  EXPECT_THROW(candela::detail::fuse_heads(maps[0], "median"), InvalidArgument);
}

TEST(GradientRollout, MatchesTheChefer2021Recursion) {
  std::vector<at::Tensor> maps = {random_attention(2, 2, 4, 4), random_attention(2, 2, 4, 5)};
  auto gen = candela::detail::seeded_generator(9, 0);
  std::vector<at::Tensor> grads = {at::randn({2, 2, 4, 4}, gen, at::kDouble), at::randn({2, 2, 4, 4}, gen, at::kDouble)};
  at::Tensor r = candela::detail::gradient_rollout(maps, grads);
  for (int64_t s = 0; s < 2; ++s) {
    at::Tensor ref = at::eye(4, at::kDouble);
    for (size_t l = 0; l < 2; ++l) {
      at::Tensor cam = at::zeros({4, 4}, at::kDouble);
      for (int64_t h = 0; h < 2; ++h) cam += (grads[l][s][h] * maps[l][s][h]).clamp_min(0) / 2.0;
      ref = ref + at::matmul(cam, ref);
    }
    EXPECT_TRUE(at::allclose(r[s], ref, 0, 1e-12));
  }
  // No positive gradient x attention anywhere: the identity.
  at::Tensor none = candela::detail::gradient_rollout(maps, {-maps[0], -maps[1]});
  EXPECT_TRUE(at::allclose(none, at::eye(4, at::kDouble).expand({2, 4, 4})));
}

TEST(AttentionFlow, OneAndTwoLayersHaveClosedForms) {
  const int64_t l = 6;
  at::Tensor a1 = candela::detail::residual_attention(random_attention(1, 2, l, 11).mean(1), 0.0);
  at::Tensor a2 = candela::detail::residual_attention(random_attention(1, 2, l, 12).mean(1), 0.0);
  // One layer: the flow from j to the query is the edge's capacity.
  at::Tensor f1 = candela::detail::attention_flow({a1}, 0);
  EXPECT_TRUE(at::allclose(f1[0], a1[0][0], 0, 1e-12));
  // Two layers: every path j -> k -> q is disjoint from the others, so the flow is the sum of
  // the paths' bottlenecks.
  at::Tensor f2 = candela::detail::attention_flow({a1, a2}, 2);
  for (int64_t j = 0; j < l; ++j) {
    double expected = 0;
    for (int64_t k = 0; k < l; ++k) expected += std::min(a1[0][k][j].item<double>(), a2[0][2][k].item<double>());
    EXPECT_NEAR(f2[0][j].item<double>(), expected, 1e-12) << j;
  }
}

TEST(AttentionFlow, EqualsAnEdmondsKarpReferenceOnFourLayers) {
  const int64_t l = 5, layers = 4;
  std::vector<at::Tensor> res;
  for (int64_t i = 0; i < layers; ++i)
    res.push_back(candela::detail::residual_attention(random_attention(2, 2, l, 20 + i).mean(1), 0.3));
  at::Tensor flow = candela::detail::attention_flow(res, 0);
  for (int64_t s = 0; s < 2; ++s)
    for (int64_t j = 0; j < l; ++j) {
      const int nodes = static_cast<int>((layers + 1) * l);
      std::vector<std::vector<double>> cap(nodes, std::vector<double>(nodes, 0.0));
      for (int64_t layer = 0; layer < layers; ++layer)
        for (int64_t i = 0; i < l; ++i)
          for (int64_t k = 0; k < l; ++k) cap[layer * l + k][(layer + 1) * l + i] = res[layer][s][i][k].item<double>();
      EXPECT_NEAR(flow[s][j].item<double>(), edmonds_karp(cap, static_cast<int>(j), static_cast<int>(layers * l)),
                  1e-12);
    }
}

// ---- on the BERT-like fixture ----------------------------------------------------------------

TEST(TextFixture, AttentionLayersAreFoundAndRolloutMatchesTheNumPyReference) {
  Model model = Model::load(fixture("text_bert.pt"));
  const auto layers = candela::detail::find_attention_layers(model);
  ASSERT_EQ(layers.size(), 2u) << "the two attn.softmax modules";
  for (const auto& l : layers) EXPECT_NE(l.find("attn.softmax"), std::string::npos) << l;
  auto ref = reference();
  at::Tensor x = json_tensor(ref["ids"]).to(at::kFloat);
  auto a = AttentionRollout().explain(model, {.inputs = x});
  at::Tensor expected = json_tensor(ref["rollout_mean"]).select(1, 0);
  EXPECT_EQ(a.values.sizes(), x.sizes());
  EXPECT_LE((a.values.to(at::kDouble) - expected).abs().max().item<double>(), 1e-5);
  EXPECT_TRUE(at::allclose(a.values.sum(1).to(at::kDouble), at::ones({4}, at::kDouble), 0, 1e-5));
  // [PAD] positions receive nothing: no query attends to them.
  EXPECT_EQ(a.values.masked_select(x == 0).abs().max().item<double>(), 0.0);
}

TEST(TextFixture, GradientRolloutMatchesTheAutogradReference) {
  Model model = Model::load(fixture("text_bert.pt"));
  // Frozen weights: the gradients still reach every attention map (taps track them).
  for (auto p : model.module()->parameters()) p.set_requires_grad(false);
  auto ref = reference();
  at::Tensor x = json_tensor(ref["ids"]).to(at::kFloat);
  auto a = GradAttentionRollout().explain(model, {.inputs = x});
  at::Tensor expected = json_tensor(ref["grad_rollout"]).select(1, 0);
  const double scale = expected.abs().max().item<double>();
  EXPECT_LE((a.values.to(at::kDouble) - expected).abs().max().item<double>(), 1e-4 * scale);
  EXPECT_EQ(a.targets, ref["targets"].get<std::vector<int64_t>>());
}

TEST(TextFixture, LayerIntegratedGradientsAtTheEmbeddingMatchesTheAutogradReference) {
  Model model = Model::load(fixture("text_bert.pt"));
  auto ref = reference();
  at::Tensor x = json_tensor(ref["ids"]).to(at::kFloat);
  auto a = LayerIntegratedGradients({.layers = {"tok"}}).explain(model, {.inputs = x});
  at::Tensor expected = json_tensor(ref["layer_ig_tok"]);
  ASSERT_EQ(a.values.sizes(), expected.sizes());
  const double scale = expected.abs().max().item<double>();
  EXPECT_LE((a.values.to(at::kDouble) - expected).abs().max().item<double>(), 1e-4 * scale);
}

TEST(TextFixture, PlantedTriggerTokensRankFirst) {
  // The trigger word alone decides the class; a faithful token attribution ranks it first among
  // the sentence's words ([CLS], [SEP] and [PAD] — ids below 5 — are not words).
  Model model = Model::load(fixture("text_bert.pt"));
  at::Tensor x = test_ids(64);
  at::Tensor trigger = read_npy(fixture("text_test_trigger.npy"));
  auto hits = [&](const at::Tensor& values) {
    return (values.masked_fill(x < 5, -INFINITY).argmax(1).cpu() == trigger).sum().item<int64_t>();
  };
  auto ig = LayerIntegratedGradients({.layers = {"tok"}}).explain(model, {.inputs = x});
  EXPECT_GE(hits(reduce_embedding(ig.values, "sum")), 58) << "layer IG, signed sum (>= 90% of 64)";
  EXPECT_GE(hits(reduce_embedding(ig.values, "l2")), 58) << "layer IG, L2 norm";
  auto gxa = LayerGradientXActivation({.layers = {"tok"}}).explain(model, {.inputs = x});
  EXPECT_GE(hits(reduce_embedding(gxa.values, "l2")), 58) << "gradient x embedding, L2 norm";
  // Occlusion of one token at a time by [PAD] (baseline zeros: id 0).
  ExplainRequest r{.inputs = x};
  r.feature_mask = at::arange(16).view({1, 16});
  auto ablation = Registry::builtin().create("feature_ablation")->explain(model, r);
  EXPECT_GE(hits(ablation.values), 58) << "feature ablation with [PAD]";
}

// Token KernelSHAP and LIME, absent tokens becoming [PAD] (the zeros baseline, id 0). Groups: one
// per position up to [SEP], the padding joined to [SEP]'s (it equals the baseline, so it changes no
// coalition). With every coalition enumerated (n_samples >= 2^G - 2) KernelSHAP is the exact
// Shapley value over the tokens; the planted trigger ranks first for KernelSHAP and LIME as for
// the gradient methods (>= 90% of the sentences: 11 of 12).
TEST(TextFixture, TokenKernelShapIsTheExactShapleyValueAndLimeFindsTheTrigger) {
  Model model = Model::load(fixture("text_bert.pt"));
  const int64_t n = 12;
  const at::Tensor x = test_ids(n);
  const at::Tensor trigger = read_npy(fixture("text_test_trigger.npy")).slice(0, 0, n);
  at::Tensor mask = at::arange(16, at::kLong).view({1, 16}).repeat({n, 1});
  for (int64_t i = 0; i < n; ++i) {
    const int64_t sep = (x[i] == 3).nonzero()[0][0].item<int64_t>();  // [SEP] is id 3
    mask[i].slice(0, sep).fill_(sep);
  }
  ExplainRequest r{.inputs = x};
  r.feature_mask = mask;
  // The exact comparison on the two shortest sentences (8 groups: 254 coalitions each).
  std::vector<int64_t> shortest(static_cast<size_t>(n));
  std::iota(shortest.begin(), shortest.end(), 0);
  std::stable_sort(shortest.begin(), shortest.end(), [&](int64_t a, int64_t b) {
    return mask[a].max().item<int64_t>() < mask[b].max().item<int64_t>();
  });
  const at::Tensor pick = at::tensor(std::vector<int64_t>(shortest.begin(), shortest.begin() + 2), at::kLong);
  ExplainRequest few = r;
  few.inputs = x.index_select(0, pick);
  few.feature_mask = mask.index_select(0, pick);
  const auto& registry = Registry::builtin();
  const at::Tensor exact = registry.create("exact_shapley")->explain(model, few).values.to(at::kDouble);
  const at::Tensor ks_all =
      registry.create("kernel_shap", {{"n_samples", 65536}})->explain(model, few).values.to(at::kDouble);
  EXPECT_LE((ks_all - exact).abs().max().item<double>(), 1e-5 * std::max(1.0, exact.abs().max().item<double>()));
  auto hits = [&](const at::Tensor& values) {
    return (values.masked_fill(x < 5, -INFINITY).argmax(1).cpu() == trigger).sum().item<int64_t>();
  };
  EXPECT_GE(hits(registry.create("kernel_shap", {{"n_samples", 500}})->explain(model, r).values), 11) << "kernel_shap";
  EXPECT_GE(hits(registry.create("lime", {{"num_samples", 500}})->explain(model, r).values), 11) << "lime";
}

// ERASER comprehensiveness and sufficiency (DeYoung et al. 2020) on tokens, through `candela
// evaluate`'s library path, order the methods the same way on two models trained from different
// seeds (text_bert.pt, text_bert_seed2.pt) over the same sentences. Fixtures trained at build time
// differ between CPUs, so only orders that hold by construction are asserted:
//  - the trigger-finding methods (layer IG and AttnLRP at the embedding, occlusion of one token by
//    [PAD]; PlantedTriggerTokensRankFirst) remove the trigger at every k, so their comprehensiveness
//    is near p(x) (no trigger: neutral) and their sufficiency near 0, while a seeded random
//    attribution removes or keeps it with probability about k%: a gap of more than 0.3 either way;
//  - those are also the best any map can do, so attention rollout, which does not look for the
//    trigger, may at most tie with them (within 0.02), on both seeds. Its distance to them and to
//    random is not asserted: it depends on what the attention learned.
TEST(TextFixture, EraserMetricsOrderMethodsTheSameWayAcrossTwoSeeds) {
  const int64_t n = 24;
  const std::vector<std::string> finders = {"layer_integrated_gradients", "attn_lrp", "feature_ablation"};
  const std::vector<std::string> metrics = {"comprehensiveness", "sufficiency"};
  candela::testing::TempDir dir;
  std::map<std::string, std::map<std::string, std::vector<double>>> mean;  // metric -> method -> per seed
  std::vector<at::Tensor> outputs;
  for (const std::string name : {"text_bert", "text_bert_seed2"}) {
    EvaluateJob job;
    job.model = fixture(name + ".pt");
    job.data = fixture("text_test_ids.npy");
    job.max_samples = n;
    job.methods = finders;
    job.methods.push_back("attention_rollout");
    job.method_options = {{"layer_integrated_gradients", {{"layers", {"tok"}}, {"n_steps", 16}}},
                          {"attn_lrp", {{"layers", {"tok"}}}}};
    job.metrics = metrics;
    job.bootstrap = 0;
    job.out = dir / name;
    const nlohmann::json r = run(job);
    // The control: a seeded random map, scored by the same metrics on the same samples and classes.
    Model model = Model::load(job.model);
    const at::Tensor x = test_ids(n);
    outputs.push_back(model.forward(x).detach());
    MetricInput in;
    in.model = &model;
    in.inputs = x;
    in.targets = outputs.back().argmax(1);
    in.attributions =
        at::rand({n, 16}, candela::detail::seeded_generator(7, 0), at::TensorOptions().dtype(at::kDouble));
    for (const auto& metric : metrics) {
      for (const auto& [method, e] : r["summary"][metric]["methods"].items())
        mean[metric][method].push_back(e["mean"].get<double>());
      mean[metric]["random"].push_back(MetricRegistry::builtin().create(metric)->score(in).mean().item<double>());
    }
  }
  ASSERT_GT((outputs[0] - outputs[1]).abs().max().item<double>(), 1e-3) << "two different models";
  for (const auto& metric : metrics) {
    const double sign = metric == "comprehensiveness" ? 1.0 : -1.0;  // higher / lower is better
    std::string table;
    for (const auto& [method, v] : mean[metric])
      table += "  " + method + ": " + std::to_string(v[0]) + ", " + std::to_string(v[1]) + "\n";
    SCOPED_TRACE(metric + " (seed 17, seed 29):\n" + table);
    for (size_t seed = 0; seed < 2; ++seed)
      for (const auto& f : finders) {
        EXPECT_GT(sign * (mean[metric][f][seed] - mean[metric]["random"][seed]), 0.3)
            << f << " vs random, seed " << seed;
        EXPECT_GT(sign * (mean[metric][f][seed] - mean[metric]["attention_rollout"][seed]), -0.02)
            << f << " vs attention_rollout, seed " << seed;
      }
  }
}

TEST(TextFixture, OnnxExportsGiveTheSameAttributionsAsTheTracedModel) {
  Model pt = Model::load(fixture("text_bert.pt"));
  const at::Tensor x = test_ids(8);
  const at::Tensor out = pt.forward(x).detach();
  auto rollout_pt = AttentionRollout().explain(pt, {.inputs = x}).values;
  auto lig_pt = LayerIntegratedGradients({.layers = {"tok"}, .n_steps = 16}).explain(pt, {.inputs = x}).values;
  ExplainRequest occl{.inputs = x};
  occl.feature_mask = at::arange(16).view({1, 16});
  auto ablation_pt = Registry::builtin().create("feature_ablation")->explain(pt, occl).values;
  auto lrp_pt = AttnLrp({.layers = {"tok"}}).explain(pt, {.inputs = x}).values;
  // Opset 14 has no LayerNormalization: its LayerNorms are ReduceMean/Sub/Pow/Sqrt/Div chains.
  for (const char* file : {"text_bert_op14.onnx", "text_bert_op17.onnx"}) {
    SCOPED_TRACE(file);
    Model onnx = Model::load(fixture(file));
    ASSERT_EQ(onnx.input_spec().layout, "NL") << "the sidecar's layout";
    EXPECT_LE((onnx.forward(x).detach() - out).abs().max().item<double>(), 1e-5);
    // The attention maps are the ONNX Softmax nodes with [N, H, L, L] outputs.
    EXPECT_EQ(candela::detail::find_attention_layers(onnx).size(), 2u);
    EXPECT_LE((AttentionRollout().explain(onnx, {.inputs = x}).values - rollout_pt).abs().max().item<double>(), 1e-5);
    EXPECT_LE((Registry::builtin().create("feature_ablation")->explain(onnx, occl).values - ablation_pt)
                  .abs().max().item<double>(), 1e-5);
    const std::string embedding = token_embedding(onnx);
    ASSERT_FALSE(embedding.empty());
    auto lig = LayerIntegratedGradients({.layers = {embedding}, .n_steps = 16}).explain(onnx, {.inputs = x}).values;
    EXPECT_LE((lig - lig_pt).abs().max().item<double>(), 1e-5 * std::max(1.0, lig_pt.abs().max().item<double>()));
    // AttnLRP through the exported graph: LayerNormalization (or its decomposition at opset 14),
    // the Erf-based GELU (found whole: the identity rule as on aten::gelu, stabiliser included),
    // MatMul between activations, Softmax, MatMul + Add as one linear layer.
    auto lrp = AttnLrp({.layers = {embedding}}).explain(onnx, {.inputs = x});
    std::printf("%s: AttnLRP max |onnx - traced| = %.3g of max |R| %.3g\n", file,
                (lrp.values - lrp_pt).abs().max().item<double>(), lrp_pt.abs().max().item<double>());
    EXPECT_LE((lrp.values - lrp_pt).abs().max().item<double>(), 1e-5 * std::max(1.0, lrp_pt.abs().max().item<double>()));
    int erf_gelu = 0;
    for (const auto& r : lrp.extra["rules"]) erf_gelu += r["rule"] == "identity (erf gelu)";
    EXPECT_EQ(erf_gelu, 2) << "one GELU per encoder layer";
  }
}

// ---- forward arguments: a model called as Hugging Face's BERT is ---------------------------------
// text_bert_masked.pt is text_bert.pt's weights with forward(input_ids, attention_mask=None,
// token_type_ids=None); given attention_mask = (ids != [PAD]) it computes exactly text_bert's
// function (the fixture asserts it), so every method family must give text_bert's numbers.

namespace {
double max_rel(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>() /
         std::max(1.0, b.abs().max().item<double>());
}
}  // namespace

TEST(ForwardArgs, AGivenAttentionMaskGivesTheNumbersOfTheModelThatComputesItInside) {
  Model pt = Model::load(fixture("text_bert.pt"));
  Model masked = Model::load(fixture("text_bert_masked.pt"));
  const auto params = masked.forward_parameters();
  ASSERT_EQ(params.size(), 2u);
  EXPECT_EQ(params[0].name, "attention_mask");
  EXPECT_EQ(params[1].name, "token_type_ids");
  const at::Tensor x = test_ids(6);
  const at::Tensor mask = (x != 0).to(at::kLong);
  const Model m = masked.with_forward_args({{"attention_mask", mask}});
  EXPECT_LE(max_rel(m.forward(x).detach(), pt.forward(x).detach()), 1e-6);
  EXPECT_GT(max_rel(masked.forward(x).detach(), pt.forward(x).detach()), 1e-3) << "no mask: padding is attended to";
  auto same = [&](const Explainer& e, ExplainRequest r, const char* what) -> Attribution {
    SCOPED_TRACE(what);
    const Attribution want = e.explain(pt, r), got = e.explain(m, r);
    EXPECT_EQ(got.values.sizes(), want.values.sizes());
    if (got.values.sizes() != want.values.sizes()) return got;
    EXPECT_LE(max_rel(got.values, want.values), 1e-5);
    EXPECT_EQ(got.targets, want.targets);
    return got;
  };
  // Layer taps with replaced activations, rows by sample (layer IG), tracked taps (gradient x
  // activation), the rule engine on a tapped graph (AttnLRP), forward-only perturbations through the
  // inference graph (feature ablation) and the attention maps (rollouts). The mask has a row per
  // sample, so each sample is explained alone.
  ExplainRequest r{.inputs = x};
  const Attribution lig = same(LayerIntegratedGradients({.layers = {"tok"}, .n_steps = 16}), r, "layer IG");
  EXPECT_EQ(lig.extra["suffix_execution"], true) << "the mask crosses the cut with the activations: " << lig.extra;
  same(LayerGradientXActivation({.layers = {"tok"}}), r, "gradient x activation");
  same(AttnLrp({.layers = {"tok"}}), r, "AttnLRP");
  same(AttentionRollout(), r, "attention rollout");
  same(GradAttentionRollout(), r, "gradient rollout");
  // Perturbations keep the given mask, as Captum's additional_forward_args do (a token replaced by
  // [PAD] is still attended to, unlike in text_bert, which masks every [PAD]): token i's ablation
  // value is f(x; mask) - f(x with token i -> [PAD]; mask), by hand.
  ExplainRequest occl{.inputs = x};
  occl.feature_mask = at::arange(16).view({1, 16});
  const Attribution ablation = Registry::builtin().create("feature_ablation")->explain(m, occl);
  for (int64_t s = 0; s < 2; ++s) {
    const at::Tensor row = x.slice(0, s, s + 1);
    at::Tensor perturbed = row.repeat({16, 1});
    for (int64_t i = 0; i < 16; ++i) perturbed.index_put_({i, i}, 0.0);
    const Model alone = masked.with_forward_args({{"attention_mask", mask.slice(0, s, s + 1)}});
    const int64_t t = ablation.targets[static_cast<size_t>(s)];
    const at::Tensor want = alone.forward(row).detach().select(1, t) - alone.forward(perturbed).detach().select(1, t);
    EXPECT_LE(max_rel(ablation.values[s], want), 1e-5) << "sample " << s;
  }
  // One mask row for every sample: broadcast, no per-sample split. All ones is forward()'s default.
  const Model ones = masked.with_forward_args({{"attention_mask", at::ones({1, 16}, at::kLong)}});
  const auto lig_default = LayerIntegratedGradients({.layers = {"tok"}, .n_steps = 16}).explain(masked, r).values;
  EXPECT_LE(max_rel(LayerIntegratedGradients({.layers = {"tok"}, .n_steps = 16}).explain(ones, r).values, lig_default),
            1e-6);
  // Token types matter (type 1's embedding is not zero), and reach the layer methods.
  const Model typed = m.with_forward_args({{"attention_mask", mask}, {"token_type_ids", at::ones({1, 16}, at::kLong)}});
  EXPECT_GT(max_rel(LayerIntegratedGradients({.layers = {"tok"}, .n_steps = 16}).explain(typed, r).values, lig.values),
            1e-3);
  // A model copy with a per-sample mask gives each sample the explanation of its own row alone.
  const at::Tensor one = x.slice(0, 2, 3);
  const auto alone = LayerIntegratedGradients({.layers = {"tok"}, .n_steps = 16})
                         .explain(masked.with_forward_args({{"attention_mask", mask.slice(0, 2, 3)}}), {.inputs = one});
  EXPECT_LE(max_rel(lig.values.slice(0, 2, 3), alone.values), 1e-6);
}

TEST(ForwardArgs, OnnxInputsBecomeNamedParametersWithTheModelsDefaults) {
  Model pt = Model::load(fixture("text_bert.pt"));
  Model masked = Model::load(fixture("text_bert_masked.pt"));
  const at::Tensor x = test_ids(6);
  const at::Tensor mask = (x != 0).to(at::kLong);
  const auto lig_pt = LayerIntegratedGradients({.layers = {"tok"}, .n_steps = 16}).explain(pt, {.inputs = x}).values;
  for (const char* file : {"text_bert_masked_op14.onnx", "text_bert_masked_op17.onnx"}) {
    SCOPED_TRACE(file);
    Model onnx = Model::load(fixture(file));
    const auto params = onnx.forward_parameters();
    ASSERT_EQ(params.size(), 2u);
    EXPECT_EQ(params[0].name, "attention_mask");
    EXPECT_EQ(params[1].name, "token_type_ids");
    EXPECT_TRUE(params[0].has_default && params[1].has_default) << "same shape as input_ids: ones and zeros";
    // The defaults are the scripted model's (a mask of ones, type 0); a given mask is text_bert's function.
    EXPECT_LE(max_rel(onnx.forward(x).detach(), masked.forward(x).detach()), 1e-5);
    const Model m = onnx.with_forward_args({{"attention_mask", mask}});
    EXPECT_LE(max_rel(m.forward(x).detach(), pt.forward(x).detach()), 1e-5);
    const std::string embedding = token_embedding(m);
    ASSERT_FALSE(embedding.empty());
    const auto lig = LayerIntegratedGradients({.layers = {embedding}, .n_steps = 16}).explain(m, {.inputs = x}).values;
    EXPECT_LE(max_rel(lig, lig_pt), 1e-5);
    const auto lrp = AttnLrp({.layers = {embedding}}).explain(m, {.inputs = x}).values;
    const auto lrp_pt = AttnLrp({.layers = {"tok"}}).explain(pt, {.inputs = x}).values;
    EXPECT_LE(max_rel(lrp, lrp_pt), 1e-5);
  }
}

// ---- the small vision transformer (tests/fixtures/make_vit_fixtures.py) -----------------------
// torchvision's VisionTransformer on 32x32 images, 16 patches of 8x8 + the class token; one patch
// (stripes: horizontal or vertical) decides the class, two distractor patches (checkerboards of the
// same amplitude) and the noise carry no class.

namespace {

at::Tensor vit_images(int64_t count) { return read_npy(fixture("vit_test_images.npy")).slice(0, 0, count).contiguous(); }

// Pixel attributions [N, 3, 32, 32] summed over channels and each 8x8 patch: [N, 16], row-major.
at::Tensor patch_sums(const at::Tensor& values) {
  const int64_t n = values.size(0);
  return values.to(at::kDouble).sum(1).reshape({n, 4, 8, 4, 8}).sum({2, 4}).reshape({n, 16});
}

}  // namespace

TEST(VitFixture, TheDecidingPatchRanksFirstForAttnLrpAndIntegratedGradients) {
  // The ground truth is planted: only the deciding patch carries the class (the distractors have the
  // same amplitude and a random sign), so a faithful attribution gives it the largest share of the
  // predicted class's evidence. >= 90% of the 64 test images (58), as the issue asks.
  Model model = Model::load(fixture("vit.pt"));
  const at::Tensor x = vit_images(64);
  const at::Tensor patch = read_npy(fixture("vit_test_patch.npy"));
  auto hits = [&](const at::Tensor& values) { return (patch_sums(values).argmax(1) == patch).sum().item<int64_t>(); };
  auto lrp = AttnLrp().explain(model, {.inputs = x});
  EXPECT_GE(hits(lrp.values), 58) << "AttnLRP";
  std::printf("deciding patch first of 16: AttnLRP %lld/64", static_cast<long long>(hits(lrp.values)));
  // Every node of the ViT got a rule; the attention's softmax and its two products among them.
  std::set<std::string> rules;
  for (const auto& r : lrp.extra["rules"]) rules.insert(r["rule"].get<std::string>());
  for (const char* r : {"softmax_gradient", "uniform", "epsilon", "layer_norm_std_constant"}) EXPECT_TRUE(rules.count(r)) << r;
  auto ig = IntegratedGradients({.n_steps = 32}).explain(model, {.inputs = x});
  EXPECT_GE(hits(ig.values), 58) << "integrated gradients";
  std::printf(", integrated gradients %lld/64\n", static_cast<long long>(hits(ig.values)));
}

TEST(VitFixture, AttentionRolloutsRunOnTheVit) {
  Model model = Model::load(fixture("vit.pt"));
  const at::Tensor x = vit_images(16);
  EXPECT_EQ(candela::detail::find_attention_layers(model).size(), 2u);
  // Rollout rows are stochastic (a product of row-stochastic matrices): the class token's row sums to 1.
  auto rollout = AttentionRollout().explain(model, {.inputs = x}).values;
  ASSERT_EQ(rollout.sizes(), (std::vector<int64_t>{16, 17}));
  EXPECT_LE((rollout.to(at::kDouble).sum(1) - 1).abs().max().item<double>(), 1e-5);
  EXPECT_GE(rollout.min().item<double>(), 0.0);
  auto grad = GradAttentionRollout().explain(model, {.inputs = x}).values;
  ASSERT_EQ(grad.sizes(), (std::vector<int64_t>{16, 17}));
  EXPECT_TRUE(at::isfinite(grad).all().item<bool>());
  // R = I + sum of non-negative terms: the class token's own entry is at least 1.
  EXPECT_GE(grad.select(1, 0).min().item<double>(), 1.0 - 1e-6);
}

TEST(VitFixture, OnnxExportsGiveTheSameAttributionsAsTheTracedModel) {
  Model pt = Model::load(fixture("vit.pt"));
  const at::Tensor x = vit_images(4);
  const at::Tensor out = pt.forward(x).detach();
  auto rollout_pt = AttentionRollout().explain(pt, {.inputs = x}).values;
  auto ig_pt = IntegratedGradients({.n_steps = 8}).explain(pt, {.inputs = x}).values;
  auto lrp_pt = AttnLrp().explain(pt, {.inputs = x}).values;
  for (const char* file : {"vit_op14.onnx", "vit_op17.onnx"}) {
    SCOPED_TRACE(file);
    Model onnx = Model::load(fixture(file));
    EXPECT_LE((onnx.forward(x).detach() - out).abs().max().item<double>(), 1e-5);
    EXPECT_EQ(candela::detail::find_attention_layers(onnx).size(), 2u);
    EXPECT_LE((AttentionRollout().explain(onnx, {.inputs = x}).values - rollout_pt).abs().max().item<double>(), 1e-5);
    auto ig = IntegratedGradients({.n_steps = 8}).explain(onnx, {.inputs = x}).values;
    EXPECT_LE((ig - ig_pt).abs().max().item<double>(), 1e-5 * std::max(1.0, ig_pt.abs().max().item<double>()));
    auto lrp = AttnLrp().explain(onnx, {.inputs = x}).values;
    EXPECT_TRUE(at::equal(patch_sums(lrp).argmax(1), patch_sums(lrp_pt).argmax(1)));
    std::printf("%s: AttnLRP max |onnx - traced| = %.3g of max |R| %.3g\n", file,
                (lrp - lrp_pt).abs().max().item<double>(), lrp_pt.abs().max().item<double>());
    EXPECT_LE((lrp - lrp_pt).abs().max().item<double>(), 1e-5 * std::max(1.0, lrp_pt.abs().max().item<double>()));
  }
}

// The stock torchvision model (nn.MultiheadAttention) with the same weights, traced with
// gradients enabled: its attention maps are functional softmaxes [N * heads, L, L] inside the
// MultiheadAttention modules, found as "MODULE:softmax" and read as [N, heads, L, L]. Same
// function, same maps: the same rollouts and AttnLRP as the model with the attention written out.
TEST(VitFixture, StockMultiheadAttentionGivesTheSameMapsAsTheExplicitModel) {
  Model explicit_model = Model::load(fixture("vit.pt")), stock = Model::load(fixture("vit_stock.pt"));
  const at::Tensor x = vit_images(4);
  const auto layers = candela::detail::find_attention_layers(stock);
  ASSERT_EQ(layers.size(), 2u);
  for (const auto& l : layers) EXPECT_NE(l.find("self_attention:softmax"), std::string::npos) << l;
  const at::Tensor maps = candela::detail::read_attention_maps(stock, layers, x);
  EXPECT_EQ(maps.sizes(), (std::vector<int64_t>{4, 2, 2, 17, 17}));  // [N, layers, heads, L, L]
  auto close = [](const at::Tensor& a, const at::Tensor& b) {
    return (a - b).abs().max().item<double>() <= 1e-5 * std::max(1.0, b.abs().max().item<double>());
  };
  EXPECT_TRUE(close(maps, candela::detail::read_attention_maps(explicit_model, {}, x)));
  EXPECT_TRUE(close(AttentionRollout().explain(stock, {.inputs = x}).values,
                    AttentionRollout().explain(explicit_model, {.inputs = x}).values));
  EXPECT_TRUE(close(Registry::builtin().create("grad_attention_rollout")->explain(stock, {.inputs = x}).values,
                    Registry::builtin().create("grad_attention_rollout")->explain(explicit_model, {.inputs = x}).values));
  EXPECT_TRUE(close(AttnLrp().explain(stock, {.inputs = x}).values, AttnLrp().explain(explicit_model, {.inputs = x}).values));
}

TEST(VitFixture, AttnLrpRefusesTheFusedMultiheadAttentionClearly) {
  // The stock torchvision model traced under no_grad: nn.MultiheadAttention's fast path.
  Model fused = Model::load(fixture("vit_fused.pt"));
  try {
    AttnLrp().explain(fused, {.inputs = vit_images(2)});
    ADD_FAILURE() << "attn_lrp accepted aten::_native_multi_head_attention";
  } catch (const UnsupportedModel& e) {
    const std::string what = e.what();
    for (const char* needle : {"aten::_native_multi_head_attention", "fast path", "no_grad"})
      EXPECT_NE(what.find(needle), std::string::npos) << needle << " not in: " << what;
  }
}

// ---- the causal language model (tests/fixtures/make_lm_fixtures.py) ---------------------------
// [CLS] w1..w9 VERB [SEP]: exactly one of w1..w9 is a subject and the verb at position 10 agrees
// with it; fillers (and [PAD], which training scatters over the sequence: "no information") carry
// nothing, and a sequence without its subject gets a uniformly drawn verb. So the subject is the
// only token that moves log p(verb) away from log(1/4), by about log 4 at the [PAD] baseline.

namespace {

constexpr int64_t kVerbPos = 10;
#define EXPECT_CONTAINS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

at::Tensor lm_ids(int64_t count) {
  return read_npy(fixture("lm_test_ids.npy")).slice(0, 0, count).to(at::kFloat).contiguous();
}

std::string lm_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// log p(token | tokens < pos) from the logits by hand: logit - logsumexp, in float64.
at::Tensor logprob_by_hand(const at::Tensor& out, int64_t pos, const at::Tensor& token) {
  const at::Tensor row = out.select(1, pos - 1).to(at::kDouble);
  return row.gather(1, token.view({-1, 1})).squeeze(1) - row.logsumexp(1);
}

// Rank-1 hits of the subject among input positions 0..pos-1 (the tokens the prediction sees).
int64_t subject_hits(const at::Tensor& token_values, const at::Tensor& subject) {
  return (token_values.slice(1, 0, kVerbPos).argmax(1).cpu() == subject).sum().item<int64_t>();
}

}  // namespace

TEST(LmFixture, LogprobAndContrastTargetsEqualLogSoftmaxByHand) {
  Model model = Model::load(fixture("lm.pt"));
  const std::vector<std::string> vocab = model_vocabulary(model);
  ASSERT_EQ(vocab.size(), 27u);
  const at::Tensor x = lm_ids(8), ids = x.to(at::kLong);
  const at::Tensor out = model.forward(x).detach();
  ASSERT_EQ(out.sizes(), (at::IntArrayRef{8, 12, 27}));
  const at::Tensor rows = at::arange(8, at::kLong);
  const at::Tensor verb = ids.select(1, kVerbPos);
  // Teacher forcing: each sample's own verb, filled in from the input.
  const std::string own = fill_target_tokens("logprob:10", x);
  const at::Tensor lp = Target::parse(own, vocab).scores(out, rows).to(at::kDouble);
  EXPECT_LE((lp - logprob_by_hand(out, kVerbPos, verb)).abs().max().item<double>(), 1e-6);
  // One token for every sample, by vocabulary string and by id.
  const int64_t barks = std::find(vocab.begin(), vocab.end(), "barks") - vocab.begin();
  const at::Tensor barks_all = at::full({8}, barks, at::kLong);
  const at::Tensor lp_barks = Target::parse("logprob:10:barks", vocab).scores(out, rows).to(at::kDouble);
  EXPECT_LE((lp_barks - logprob_by_hand(out, kVerbPos, barks_all)).abs().max().item<double>(), 1e-6);
  EXPECT_TRUE(at::equal(lp_barks, Target::parse("logprob:10:" + std::to_string(barks)).scores(out, rows).to(at::kDouble)));
  // A contrast is the difference of two logprob targets (the foil: the next verb in the list,
  // verbs are ids 23..26, so never the sample's own).
  const at::Tensor foil = (verb - 23 + 1).remainder(4) + 23;
  std::string foils;
  for (int64_t i = 0; i < 8; ++i) foils += (i ? "," : "") + std::to_string(foil[i].item<int64_t>());
  const at::Tensor contrast = Target::parse("contrast:10:" + own.substr(11) + ":" + foils, vocab).scores(out, rows);
  const at::Tensor lp_foil = Target::parse("logprob:10:" + foils).scores(out, rows).to(at::kDouble);
  EXPECT_LE((contrast.to(at::kDouble) - (lp - lp_foil)).abs().max().item<double>(), 1e-6);
  EXPECT_LE((lp_foil - logprob_by_hand(out, kVerbPos, foil)).abs().max().item<double>(), 1e-6);
  // contrast:POS::FOIL takes the token from the input, as logprob:POS does.
  EXPECT_EQ(fill_target_tokens("contrast:10::barks", x), "contrast:10:" + own.substr(11) + ":barks");
  // PyTorch's numbers (lm_reference.json) on the first 4 samples.
  auto ref = nlohmann::json::parse(std::ifstream(fixture("lm_reference.json")));
  const at::Tensor lp4 = lp.slice(0, 0, 4);
  EXPECT_LE((lp4 - json_tensor(ref["logprob"])).abs().max().item<double>(), 1e-5);
  std::string ref_verb, ref_foil;
  for (int64_t i = 0; i < 4; ++i) {
    ref_verb += (i ? "," : "") + std::to_string(ref["verb"][i].get<int64_t>());
    ref_foil += (i ? "," : "") + std::to_string(ref["foil"][i].get<int64_t>());
  }
  const at::Tensor c4 = Target::parse("contrast:10:" + ref_verb + ":" + ref_foil).scores(out.slice(0, 0, 4), rows.slice(0, 0, 4));
  EXPECT_LE((c4.to(at::kDouble) - json_tensor(ref["contrast"])).abs().max().item<double>(), 1e-5);
  // Rows of an expanded batch read their own sample's token (sample_of_row).
  const at::Tensor twice = at::cat({out, out});
  const at::Tensor swapped = at::cat({rows, rows}).flip(0);
  EXPECT_TRUE(at::allclose(Target::parse(own).scores(twice.index_select(0, swapped), swapped).to(at::kDouble),
                           lp.index_select(0, swapped), 0, 1e-6));
}

TEST(LmFixture, BadTargetsGiveOneClearError) {
  Model model = Model::load(fixture("lm.pt"));
  const std::vector<std::string> vocab = model_vocabulary(model);
  const at::Tensor x = lm_ids(2), out = model.forward(x).detach(), rows = at::arange(2, at::kLong);
  auto score = [&](const std::string& t) { return lm_error([&] { Target::parse(t, vocab).scores(out, rows); }); };
  EXPECT_CONTAINS(score("logprob:12:barks"), "position 12 is out of range");
  EXPECT_CONTAINS(score("logprob:12:barks"), "1..11");
  EXPECT_CONTAINS(score("logprob:0:barks"), "position 0 is out of range");
  EXPECT_CONTAINS(score("logprob:10:99"), "token id 99 is out of range: the model's output has 27");
  EXPECT_CONTAINS(score("logprob:10:zebra"), "unknown token 'zebra'");
  EXPECT_CONTAINS(lm_error([] { Target::parse("logprob:10:barks"); }), "names no vocabulary");
  EXPECT_CONTAINS(score("logprob:x:barks"), "position 'x' is not an integer");
  EXPECT_CONTAINS(score("contrast:10:barks"), "write the target as contrast:POS:TOKEN:FOIL");
  EXPECT_CONTAINS(score("contrast:10:barks:barks"), "the token and the foil are the same");
  EXPECT_CONTAINS(score("logprob:1,2:3,4,5"), "once or once per sample");
  EXPECT_CONTAINS(score("logprob:10"), "names no token");
  EXPECT_CONTAINS(lm_error([&] { fill_target_tokens("logprob:11", x.slice(1, 0, 11)); }), "position 11 is out of range");
  // A classifier's output [N, C] is no language model's.
  EXPECT_CONTAINS(lm_error([&] { Target::parse("logprob:1:2").scores(at::zeros({2, 3}), rows); }),
                  "needs a language model's output [N, L, V]");
  // The app layer: --per-step needs a language model and no --target.
  ExplainJob job;
  job.model = fixture("text_bert.pt");
  job.input = "the movie was great";
  job.method = "attn_lrp";
  job.layers = {"tok"};
  job.per_step = true;
  EXPECT_CONTAINS(lm_error([&] { run(job); }), "--per-step needs a language model: an output [N, L, V]");
  job.model = fixture("lm.pt");
  job.target = "logprob:10";
  EXPECT_CONTAINS(lm_error([&] { run(job); }), "drop --target 'logprob:10'");
  job.per_step = false;
  job.target = "logprob:10:zebra";
  EXPECT_CONTAINS(lm_error([&] { run(job); }), "unknown token 'zebra'");
}

TEST(LmFixture, TheSubjectRanksFirstForTheVerb) {
  Model model = Model::load(fixture("lm.pt"));
  const at::Tensor x = lm_ids(64);
  const at::Tensor subject = read_npy(fixture("lm_test_subject.npy"));
  ExplainRequest r{.inputs = x, .target = Target::parse(fill_target_tokens("logprob:10", x))};
  auto ig = LayerIntegratedGradients({.layers = {"tok"}}).explain(model, r);
  EXPECT_GE(subject_hits(reduce_embedding(ig.values, "sum"), subject), 58) << "layer IG (>= 90% of 64)";
  auto lrp = AttnLrp({.layers = {"tok"}}).explain(model, r);
  EXPECT_GE(subject_hits(reduce_embedding(lrp.values, "sum"), subject), 58) << "AttnLRP";
  // Occlusion of one token at a time by [PAD] (baseline zeros: id 0).
  r.feature_mask = at::arange(12).view({1, 12});
  auto occlusion = Registry::builtin().create("feature_ablation")->explain(model, r);
  EXPECT_GE(subject_hits(occlusion.values, subject), 58) << "occlusion with [PAD]";
  // Against a foil: the verb of the next subject in the list (verbs are ids 23..26).
  const at::Tensor verb = x.to(at::kLong).select(1, kVerbPos);
  const at::Tensor foil = (verb - 23 + 1).remainder(4) + 23;
  std::string foils;
  for (int64_t i = 0; i < 64; ++i) foils += (i ? "," : "") + std::to_string(foil[i].item<int64_t>());
  r.target = Target::parse(fill_target_tokens("contrast:10::" + foils, x));
  r.feature_mask = at::Tensor();
  auto contrast = AttnLrp({.layers = {"tok"}}).explain(model, r);
  EXPECT_GE(subject_hits(reduce_embedding(contrast.values, "sum"), subject), 58) << "AttnLRP on the contrast";
}

TEST(LmFixture, LayerIntegratedGradientsIsCompleteOnTheLogprobTarget) {
  Model model = Model::load(fixture("lm.pt"));
  auto ref = nlohmann::json::parse(std::ifstream(fixture("lm_reference.json")));
  const at::Tensor x = json_tensor(ref["ids"]).to(at::kFloat);
  ExplainRequest r{.inputs = x, .target = Target::parse(fill_target_tokens("logprob:10", x))};
  auto a = LayerIntegratedGradients({.layers = {"tok"}}).explain(model, r);
  const at::Tensor expected = json_tensor(ref["layer_ig_tok_logprob"]);
  ASSERT_EQ(a.values.sizes(), expected.sizes());
  const double scale = expected.abs().max().item<double>();
  EXPECT_LE((a.values.to(at::kDouble) - expected).abs().max().item<double>(), 1e-4 * scale);
  // Completeness: the values add up to log p(verb | x) - log p(verb | [PAD]...). Without its
  // subject the model answers about 1/4 for each verb, so the change is near log 4.
  ASSERT_TRUE(a.convergence_delta.defined() && a.output_change.defined());
  const at::Tensor change = a.output_change.to(at::kDouble).abs();
  EXPECT_GT(change.min().item<double>(), 0.5);
  EXPECT_LE((a.convergence_delta.to(at::kDouble).abs() / change).max().item<double>(), 0.01);
}

TEST(LmFixture, PerStepGivesOneRowPerGeneratedPositionAsSingleTargetsDo) {
  const std::string text = "the old dog very big sad a brown today barks";
  for (const char* method : {"layer_integrated_gradients", "attn_lrp", "feature_ablation"}) {
    SCOPED_TRACE(method);
    ExplainJob job;
    job.model = fixture("lm.pt");
    job.input = text;
    job.method = method;
    if (std::string(method) != "feature_ablation") job.layers = {"tok"};
    if (std::string(method) == "layer_integrated_gradients") job.options = {{"n_steps", 16}};
    job.per_step = true;
    ExplainResult steps = run(job);
    at::Tensor matrix;
    nlohmann::json steps_json;
    for (const auto& art : steps.artifacts) {
      if (art.name == "attributions_steps.npy") matrix = steps.attribution.values;
      if (art.name == "steps.json") steps_json = nlohmann::json::parse(art.bytes);
    }
    ASSERT_TRUE(matrix.defined());
    ASSERT_EQ(matrix.sizes(), (at::IntArrayRef{1, 11, 12}));
    // Causal: row t-1 (log p(token_t)) sees only positions < t.
    EXPECT_EQ(matrix[0].triu(1).abs().max().item<double>(), 0.0);
    const auto& verb_step = steps_json["samples"][0]["steps"][kVerbPos - 1];
    EXPECT_EQ(verb_step["position"], kVerbPos);
    EXPECT_EQ(verb_step["token"], "barks");
    EXPECT_EQ(matrix[0][kVerbPos - 1].slice(0, 0, kVerbPos).argmax().item<int64_t>(), 3) << "the subject 'dog'";
    // Row t-1 equals the explanation of --target logprob:t alone.
    for (int64_t t : {int64_t{3}, kVerbPos}) {
      job.per_step = false;
      job.target = "logprob:" + std::to_string(t);
      ExplainResult single = run(job);
      at::Tensor one = single.attribution.values;
      if (one.dim() == 3) one = reduce_embedding(one, "sum");
      EXPECT_LE((matrix[0][t - 1] - one[0].to(at::kFloat)).abs().max().item<double>(),
                1e-5 * std::max(1.0, one.abs().max().item<double>()))
          << "position " << t;
    }
  }
}

TEST(LmFixture, OnnxExportsGiveTheSameAttributionsAsTheTracedModel) {
  Model pt = Model::load(fixture("lm.pt"));
  const at::Tensor x = lm_ids(4);
  const at::Tensor out = pt.forward(x).detach();
  ExplainRequest r{.inputs = x, .target = Target::parse(fill_target_tokens("logprob:10", x))};
  auto lig_pt = LayerIntegratedGradients({.layers = {"tok"}, .n_steps = 16}).explain(pt, r).values;
  auto lrp_pt = AttnLrp({.layers = {"tok"}}).explain(pt, r).values;
  ExplainRequest occl = r;
  occl.feature_mask = at::arange(12).view({1, 12});
  auto ablation_pt = Registry::builtin().create("feature_ablation")->explain(pt, occl).values;
  for (const char* file : {"lm_op14.onnx", "lm_op17.onnx"}) {
    SCOPED_TRACE(file);
    Model onnx = Model::load(fixture(file));
    ASSERT_EQ(onnx.input_spec().layout, "NL") << "the sidecar's layout";
    EXPECT_LE((onnx.forward(x).detach() - out).abs().max().item<double>(), 1e-5);
    EXPECT_LE((Registry::builtin().create("feature_ablation")->explain(onnx, occl).values - ablation_pt)
                  .abs().max().item<double>(), 1e-5);
    // The token embedding: the Gather node whose output is [1, L, D] (the position embedding's has no batch).
    std::string embedding;
    for (const auto& info : onnx.layers())
      if (info.type == "Gather" && info.output_shape == std::vector<int64_t>{1, 12, 32}) {
        embedding = info.name;
        break;
      }
    ASSERT_FALSE(embedding.empty());
    auto lig = LayerIntegratedGradients({.layers = {embedding}, .n_steps = 16}).explain(onnx, r).values;
    EXPECT_LE((lig - lig_pt).abs().max().item<double>(), 1e-5 * std::max(1.0, lig_pt.abs().max().item<double>()));
    // AttnLRP: the same ranking (the graphs differ in where the epsilon stabilisers sit, as on
    // the text fixture).
    auto lrp = AttnLrp({.layers = {embedding}}).explain(onnx, r).values;
    EXPECT_TRUE(at::equal(reduce_embedding(lrp, "sum").slice(1, 0, kVerbPos).argmax(1),
                          reduce_embedding(lrp_pt, "sum").slice(1, 0, kVerbPos).argmax(1)));
  }
}
