// The GPT layers: f64 gradient checks through a transformer block, the position embedding and the
// tied LM head (whose gradient reaches the embedding through both uses), the registry's text
// layers and their shape errors, and AdamW's weight-decay groups.
#include <gtest/gtest.h>

#include <cmath>

#include "core/factory.h"
#include "core/ops_attention.h"
#include "core/ops_elementwise.h"
#include "core/ops_index.h"
#include "core/ops_linalg.h"
#include "core/ops_norm.h"
#include "nn/optim.h"
#include "nn/registry.h"
#include "nn/transformer.h"
#include "tests/gradcheck.h"

namespace mel::nn {
namespace {

using testing::gradcheck;

Tensor input(const Shape& s, uint64_t seed = 5) {
  Generator g(seed);
  return randn(s, g, DType::f64).requires_grad_();
}

TEST(Transformer, BlockEqualsItsFormulaAndGradchecks) {
  TransformerOptions o;
  o.layers = 2;
  o.heads = 2;
  o.mlp_ratio = 2;
  TransformerBlock block(6, o);
  Generator g(3);
  block.reset_parameters(g);
  block.to(DType::f64);
  // Biases are 0 after GPT's initialisation; give them values so the check covers them.
  for (auto& [name, p] : block.named_parameters()) {
    if (p.dim() == 1) {
      autograd::NoGradGuard ng;
      Generator gb(static_cast<uint64_t>(name.size()));
      p.copy_(randn(p.shape(), gb, DType::f64, 0.0, 0.3));
    }
  }
  block.eval();
  const Tensor x = input({2, 5, 6});
  // The formula: x + c_proj(attn(ln_1 x)), then + c_proj(gelu(c_fc(ln_2 h))).
  const auto lin = [](const Linear& l, const Tensor& v) {
    return add(matmul(v, l.weight.t()), l.bias);
  };
  const auto ln = [](const LayerNorm& n, const Tensor& v) {
    return layer_norm(v, n.normalized_shape, n.weight, n.bias, n.eps);
  };
  Tensor h = add(x, lin(*block.attn->c_proj,
                        causal_self_attention(lin(*block.attn->c_attn, ln(*block.ln_1, x)), 2)));
  Tensor want = add(h, lin(*block.mlp->c_proj, gelu(lin(*block.mlp->c_fc, ln(*block.ln_2, h)))));
  EXPECT_TRUE(testing::all_close(block.forward(x), want, 1e-12));
  std::vector<Tensor> inputs = {x};
  for (auto& [name, p] : block.named_parameters()) inputs.push_back(p);
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>&) { return block.forward(x); }, inputs));
}

TEST(Transformer, InitialisationFollowsGpt2) {
  TransformerOptions o;
  o.layers = 8;
  o.heads = 4;
  TransformerBlock block(64, o);
  Generator g(1);
  block.reset_parameters(g);
  const auto std_of = [](const Tensor& t) {
    const std::vector<double> v = t.to(DType::f64).contiguous().to_vector();
    double s = 0.0;
    for (double x : v) s += x * x;
    return std::sqrt(s / static_cast<double>(v.size()));
  };
  EXPECT_NEAR(std_of(block.attn->c_attn->weight), 0.02, 0.001);
  EXPECT_NEAR(std_of(block.mlp->c_proj->weight), 0.02 / std::sqrt(16.0), 0.0003);
  EXPECT_EQ(std_of(block.attn->c_attn->bias), 0.0);
  EXPECT_EQ(block.ln_1->weight.to_vector(), std::vector<double>(64, 1.0));
}

TEST(Transformer, PositionEmbeddingAddsTheFirstRowsAndRefusesLongerSequences) {
  PositionEmbedding pe(8, 3, 0.5);
  Generator g(2);
  pe.reset_parameters(g);
  pe.to(DType::f64);
  const Tensor x = input({2, 5, 3});
  EXPECT_TRUE(testing::all_close(pe.forward(x), add(x, pe.weight.narrow(0, 0, 5)), 0.0));
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>&) { return pe.forward(x); }, {x, pe.weight}));
  EXPECT_MEL_ERROR(pe.forward(input({1, 9, 3})),
                   "a sequence of 9 positions is longer than the model's context of 8");
}

TEST(Transformer, TiedHeadSharesTheEmbeddingWeightAndItsGradient) {
  Sequential model;
  auto emb = std::make_shared<TokenEmbedding>(7, 4, 0.5);
  auto head = std::make_shared<LmHead>(4, 7, true, false, 0.02);
  model.push_back(emb);
  model.push_back(head);
  EXPECT_MEL_ERROR(head->forward(zeros({1, 4})), "no embedding was bound");
  bind_tied_weights(model, "test");
  Generator g(4);
  model.reset_parameters(g);
  model.to(DType::f64);
  // One parameter only: the head has none of its own.
  ASSERT_EQ(model.named_parameters().size(), 1u);
  EXPECT_EQ(model.named_parameters()[0].first, "0.weight");
  const Tensor idx = tensor_i64({1, 3, 3, 6, 0}, {5});
  const Tensor logits = model.forward(idx);
  EXPECT_TRUE(
      testing::all_close(logits, matmul(embedding(emb->weight, idx), emb->weight.t()), 0.0));
  EXPECT_TRUE(
      gradcheck([&](const std::vector<Tensor>&) { return model.forward(idx); }, {emb->weight}));
  // A tied head whose shape differs from the embedding's, or without one, is an error.
  Sequential other;
  other.push_back(std::make_shared<TokenEmbedding>(7, 5, 0.02));
  other.push_back(std::make_shared<LmHead>(4, 7, true, false, 0.02));
  EXPECT_MEL_ERROR(bind_tied_weights(other, "m"),
                   "the tied lm_head is [7, 4] but the token embedding is [7, 5]");
  Sequential lone;
  lone.push_back(std::make_shared<LmHead>(4, 7, true, false, 0.02));
  EXPECT_MEL_ERROR(bind_tied_weights(lone, "m"), "needs exactly one token_embedding");
}

TEST(Transformer, RegistryBuildsAGptFromAConfigList) {
  Json j = {{"layers",
             {{{"type", "token_embedding"}, {"vocab", 11}, {"dim", 8}},
              {{"type", "position_embedding"}, {"context", 6}},
              {{"type", "transformer"}, {"layers", 2}, {"heads", 2}, {"dropout", 0.1}},
              {{"type", "rows"}},
              {{"type", "layernorm"}},
              {{"type", "lm_head"}, {"vocab", 11}}}}};
  JsonReader r(j, "c.json", "");
  Shape shape = {6};
  auto seq = build_layers(r, "layers", shape);
  EXPECT_EQ(shape, (Shape{11}));
  Generator g(1);
  seq->reset_parameters(g);
  seq->eval();
  const Tensor out = seq->forward(zeros({3, 6}, DType::i64));
  EXPECT_EQ(out.shape(), (Shape{18, 11}));  // every position a row
  // Shapes the layers cannot take.
  Json bad = {{"layers", {{{"type", "transformer"}, {"layers", 1}, {"heads", 3}}}}};
  Shape seq_shape = {6, 8};
  EXPECT_MEL_ERROR(build_layers(JsonReader(bad, "c.json", ""), "layers", seq_shape),
                   "a width divisible by \"heads\" (3)");
  Json longer = {{"layers", {{{"type", "position_embedding"}, {"context", 4}}}}};
  Shape six = {6, 8};
  EXPECT_MEL_ERROR(build_layers(JsonReader(longer, "c.json", ""), "layers", six),
                   "at most 4 positions (the context)");
  Json tokens = {{"layers", {{{"type", "token_embedding"}, {"vocab", 5}, {"dim", 4}}}}};
  Shape image = {1, 28, 28};
  EXPECT_MEL_ERROR(build_layers(JsonReader(tokens, "c.json", ""), "layers", image),
                   "a [T] sequence of token ids per sample");
}

// Two parameters: a matrix (decays) and a bias (does not, with the groups set).
class MatrixAndBias : public Module {
 public:
  MatrixAndBias() : Module("MB") {
    w = register_parameter("w", tensor({1.0, -2.0, 0.5, 3.0}, {2, 2}));
    b = register_parameter("b", tensor({0.5, -1.0}, {2}));
  }
  Tensor w, b;
};

TEST(Optim, AdamWDecayGroupsLeaveNormsAndBiasesUndecayed) {
  MatrixAndBias m;
  FlatParameters f(m);
  Adam opt(f, AdamOptions{0.9, 0.999, 1e-8, 0.5, true});
  opt.set_decay({true, false});
  const std::vector<double> p0 = f.data().to(DType::f64).to_vector();
  std::vector<double> p = p0, mm(6, 0.0), vv(6, 0.0);
  for (int t = 1; t <= 3; ++t) {
    const std::vector<double> g = {0.1 * t, -0.2, 0.3, 0.05, -0.1 * t, 0.2};
    Tensor gr = f.grad();
    gr.copy_(tensor(g, {6}));
    opt.step(0.1);
    for (size_t i = 0; i < 6; ++i) {
      if (i < 4) p[i] *= 1.0 - 0.1 * 0.5;  // the matrix decays, the bias does not
      mm[i] = 0.9 * mm[i] + 0.1 * g[i];
      vv[i] = 0.999 * vv[i] + 0.001 * g[i] * g[i];
      const double bc1 = 1 - std::pow(0.9, t), bc2 = 1 - std::pow(0.999, t);
      p[i] -= 0.1 / bc1 * mm[i] / (std::sqrt(vv[i]) / std::sqrt(bc2) + 1e-8);
    }
    const std::vector<double> got = f.data().to(DType::f64).to_vector();
    // The state is f32: agreement to 1e-5 (decay moves the matrix by 0.05 per step).
    for (size_t i = 0; i < 6; ++i) EXPECT_NEAR(got[i], p[i], 1e-5) << t << " " << i;
  }
  EXPECT_MEL_ERROR(opt.set_decay({true}),
                   "the weight decay groups have 1 entries for 2 parameters");
}

}  // namespace
}  // namespace mel::nn
