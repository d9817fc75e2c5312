// CRAFT: NMF against a planted factorisation, the Sobol sequence and Jansen's estimator against
// closed forms, and the whole pipeline on the digits CNN.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include "candela/io/npy.h"
#include "candela/methods/concept/craft.h"
#include "test_util.h"

using namespace candela;
using candela::testing::fixture;

namespace {

// A planted, identifiable factorisation: every concept owns a block of features no other uses.
std::pair<at::Tensor, at::Tensor> planted(int64_t p, int64_t r, int64_t f, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  at::Tensor u = at::rand({p, r}, gen).to(at::kDouble);
  at::Tensor w = at::rand({r, f}, gen).to(at::kDouble) * 0.2;
  const int64_t block = f / r;
  for (int64_t k = 0; k < r; ++k) {
    w.select(0, k).narrow(0, k * block, block).add_(1.0);
    for (int64_t j = 0; j < r; ++j)
      if (j != k) w.select(0, j).narrow(0, k * block, block).zero_();
  }
  return {u, w};
}

}  // namespace

TEST(Craft, NmfReproducesAPlantedFactorisation) {
  auto [u, w] = planted(60, 3, 24, 1);
  at::Tensor a = at::mm(u, w);
  NmfResult r = nmf(a, 3, 5000, 1e-12, 0);
  EXPECT_LT(r.relative_error, 1e-3);
  EXPECT_GE(r.u.min().item<double>(), 0.0);
  EXPECT_GE(r.w.min().item<double>(), 0.0);
  // Each planted concept is found (up to order and scale): cosine > 0.99 with one learnt row.
  at::Tensor wn = w / w.norm(2, {1}, true), rn = r.w / r.w.norm(2, {1}, true).clamp_min(1e-12);
  at::Tensor cos = at::mm(wn, rn.t());  // [planted, learnt]
  for (int64_t k = 0; k < 3; ++k) EXPECT_GT(cos[k].max().item<double>(), 0.99) << "concept " << k;
  // With the concept bank fixed, the coefficients come back.
  at::Tensor u2 = nmf_transform(a, w, 2000);
  EXPECT_LT(((u2 - u).norm() / u.norm()).item<double>(), 1e-3);
  EXPECT_THROW(nmf(-a, 3), InvalidArgument);
  EXPECT_THROW(nmf(a, 0), InvalidArgument);
}

TEST(Craft, SobolSequenceIsTheUnscrambledJoeKuoSequence) {
  // torch.quasirandom.SobolEngine(4).draw(6) (and scipy's qmc.Sobol(4, scramble=False)).
  const double expected[6][4] = {{0, 0, 0, 0},           {0.5, 0.5, 0.5, 0.5},       {0.75, 0.25, 0.25, 0.25},
                                 {0.25, 0.75, 0.75, 0.75}, {0.375, 0.375, 0.625, 0.875}, {0.875, 0.875, 0.125, 0.375}};
  at::Tensor s = sobol_sequence(4, 6);
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 4; ++j) EXPECT_DOUBLE_EQ(s[i][j].item<double>(), expected[i][j]);
  // CRAFT's masks: A, B, then C_i = A with column i from B.
  at::Tensor m = sobol_masks(2, 4);
  ASSERT_EQ(m.sizes(), (at::IntArrayRef{16, 2}));
  at::Tensor p = sobol_sequence(4, 4);
  EXPECT_TRUE(at::equal(m.narrow(0, 0, 4), p.narrow(1, 0, 2)));
  EXPECT_TRUE(at::equal(m.narrow(0, 4, 4), p.narrow(1, 2, 2)));
  EXPECT_TRUE(at::equal(m.narrow(0, 8, 4).select(1, 0), p.select(1, 2)));
  EXPECT_TRUE(at::equal(m.narrow(0, 8, 4).select(1, 1), p.select(1, 1)));
  EXPECT_TRUE(at::equal(m.narrow(0, 12, 4).select(1, 1), p.select(1, 3)));
}

TEST(Craft, JansenIndicesOfALinearFunctionAreTheVarianceShares) {
  // f(m) = sum a_i m_i with m_i ~ U(0, 1) independent: ST_i = a_i^2 / sum a_j^2.
  const std::vector<double> a = {3.0, 1.0, 0.0, 2.0};
  const int64_t d = 4, nb = 1024;
  at::Tensor masks = sobol_masks(d, nb);
  at::Tensor f = at::mv(masks, at::tensor(a, at::kDouble));
  at::Tensor st = jansen_total_indices(f, d, nb);
  const double total = 9 + 1 + 0 + 4;
  for (int64_t i = 0; i < d; ++i) EXPECT_NEAR(st[i].item<double>(), a[i] * a[i] / total, 0.03) << i;
  EXPECT_EQ(st[2].item<double>(), 0.0) << "a variable the function ignores";
  EXPECT_THROW(jansen_total_indices(f.narrow(0, 0, 10), d, nb), InvalidArgument);
}

TEST(Craft, ConceptsOfTheDigitsCnn) {
  Model model = Model::load(fixture("digits_cnn.pt"));
  at::Tensor x = read_npy(fixture("digits_test.npy"));
  CraftOptions o;
  o.number_of_concepts = 4;
  o.patch_size = 4;
  o.nb_design = 16;
  CraftResult r = craft(model, "features.3", x, 3, o);
  // 8x8 images, 4-pixel patches with stride 3: 2x2 patches per image.
  EXPECT_EQ(r.patches.sizes(), (at::IntArrayRef{16 * 4, 1, 4, 4}));
  EXPECT_TRUE(at::equal(r.patches[0], x[0].narrow(1, 0, 4).narrow(2, 0, 4)));
  EXPECT_TRUE(at::equal(r.patches[1], x[0].narrow(1, 0, 4).narrow(2, 3, 4)));
  EXPECT_EQ(r.w.sizes(), (at::IntArrayRef{4, 16}));
  EXPECT_EQ(r.u.sizes(), (at::IntArrayRef{64, 4}));
  EXPECT_GE(r.u.min().item<double>(), 0.0);
  EXPECT_LT(r.nmf_relative_error, 0.5);
  ASSERT_EQ(r.importances.size(0), 4);
  EXPECT_GE(r.importances.min().item<double>(), 0.0);
  EXPECT_GT(r.importances.sum().item<double>(), 0.0) << "the class score depends on some concept";
  // A layer before any ReLU has negative activations: a clear error.
  EXPECT_THROW(craft(model, "features.2", x, 3, o), InvalidArgument);
  o.patch_size = 9;
  EXPECT_THROW(craft(model, "features.3", x, 3, o), InvalidArgument);
}
