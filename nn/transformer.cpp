#include "nn/transformer.h"

#include <fmt/format.h>

#include <cmath>

#include "core/factory.h"
#include "core/ops_attention.h"
#include "core/ops_elementwise.h"
#include "core/ops_linalg.h"
#include "nn/registry.h"

namespace mel::nn {

void GptLinear::init_parameters(Generator& gen) {
  autograd::NoGradGuard ng;
  weight.copy_(randn(weight.shape(), gen, DType::f32, 0.0, init_std).to(weight.dtype()));
  if (bias.defined()) bias.fill_(0.0);
}

void TokenEmbedding::init_parameters(Generator& gen) {
  autograd::NoGradGuard ng;
  weight.copy_(randn(weight.shape(), gen, DType::f32, 0.0, init_std).to(weight.dtype()));
}

// ---- position embedding ------------------------------------------------------------------------

PositionEmbedding::PositionEmbedding(int64_t context_, int64_t dim_, double init_std_)
    : Module("PositionEmbedding"), context(context_), dim(dim_), init_std(init_std_) {
  MEL_CHECK(context > 0 && dim > 0, "PositionEmbedding: sizes must be positive, got {}, {}",
            context, dim);
  weight = register_parameter("weight", zeros({context, dim}));
}

void PositionEmbedding::init_parameters(Generator& gen) {
  autograd::NoGradGuard ng;
  weight.copy_(randn(weight.shape(), gen, DType::f32, 0.0, init_std).to(weight.dtype()));
}

Tensor PositionEmbedding::forward(const Tensor& x) {
  MEL_CHECK(x.dim() == 3 && x.size(2) == dim,
            "PositionEmbedding({}, {}): expected input [B, T, {}], got {}", context, dim, dim,
            shape_str(x.shape()));
  const int64_t T = x.size(1);
  MEL_CHECK(T <= context,
            "PositionEmbedding: a sequence of {} positions is longer than the model's context of "
            "{}",
            T, context);
  return add(x, weight.narrow(0, 0, T));
}

std::string PositionEmbedding::extra_repr() const {
  return fmt::format("{}, {}", context, dim);
}

// ---- attention, MLP, block ---------------------------------------------------------------------

namespace {
double proj_std(const TransformerOptions& o) {
  return o.init_std / std::sqrt(2.0 * static_cast<double>(o.layers));
}
}  // namespace

CausalSelfAttention::CausalSelfAttention(int64_t dim, const TransformerOptions& o)
    : Module("CausalSelfAttention"), heads(o.heads) {
  MEL_CHECK(o.heads >= 1 && dim % o.heads == 0,
            "CausalSelfAttention: width {} is not divisible into {} heads", dim, o.heads);
  c_attn = register_module("c_attn", std::make_shared<GptLinear>(dim, 3 * dim, o.bias, o.init_std));
  c_proj = register_module("c_proj", std::make_shared<GptLinear>(dim, dim, o.bias, proj_std(o)));
  resid_dropout = register_module("resid_dropout", std::make_shared<Dropout>(o.dropout));
}

Tensor CausalSelfAttention::forward(const Tensor& x) {
  return resid_dropout->forward(c_proj->forward(causal_self_attention(c_attn->forward(x), heads)));
}

std::string CausalSelfAttention::extra_repr() const {
  return fmt::format("heads={}", heads);
}

Mlp::Mlp(int64_t dim, const TransformerOptions& o) : Module("MLP") {
  const int64_t hidden = o.mlp_ratio * dim;
  c_fc = register_module("c_fc", std::make_shared<GptLinear>(dim, hidden, o.bias, o.init_std));
  act = register_module("act", std::make_shared<ActivationLayer>(o.activation));
  c_proj = register_module("c_proj", std::make_shared<GptLinear>(hidden, dim, o.bias, proj_std(o)));
  dropout = register_module("dropout", std::make_shared<Dropout>(o.dropout));
}

Tensor Mlp::forward(const Tensor& x) {
  return dropout->forward(c_proj->forward(act->forward(c_fc->forward(x))));
}

TransformerBlock::TransformerBlock(int64_t dim, const TransformerOptions& o) : Module("Block") {
  ln_1 = register_module("ln_1", std::make_shared<LayerNorm>(Shape{dim}));
  attn = register_module("attn", std::make_shared<CausalSelfAttention>(dim, o));
  ln_2 = register_module("ln_2", std::make_shared<LayerNorm>(Shape{dim}));
  mlp = register_module("mlp", std::make_shared<Mlp>(dim, o));
}

Tensor TransformerBlock::forward(const Tensor& x) {
  Tensor h = add(x, attn->forward(ln_1->forward(x)));
  return add(h, mlp->forward(ln_2->forward(h)));
}

Tensor Rows::forward(const Tensor& x) {
  MEL_CHECK(x.dim() == 3, "Rows: expected input [B, T, D], got {}", shape_str(x.shape()));
  return x.reshape({x.size(0) * x.size(1), x.size(2)});
}

// ---- LM head -----------------------------------------------------------------------------------

LmHead::LmHead(int64_t dim_, int64_t vocab_, bool tied_, bool has_bias, double init_std_)
    : Module("LMHead"), dim(dim_), vocab(vocab_), tied(tied_), init_std(init_std_) {
  MEL_CHECK(dim > 0 && vocab > 0, "LMHead: sizes must be positive, got {}, {}", dim, vocab);
  if (!tied) weight = register_parameter("weight", zeros({vocab, dim}));
  if (has_bias) bias = register_parameter("bias", zeros({vocab}));
}

void LmHead::init_parameters(Generator& gen) {
  autograd::NoGradGuard ng;
  if (weight.defined()) {
    weight.copy_(randn(weight.shape(), gen, DType::f32, 0.0, init_std).to(weight.dtype()));
  }
  if (bias.defined()) bias.fill_(0.0);
}

Tensor LmHead::forward(const Tensor& x) {
  MEL_CHECK(x.dim() >= 1 && x.size(-1) == dim, "LMHead({}, {}): expected input [..., {}], got {}",
            dim, vocab, dim, shape_str(x.shape()));
  Tensor w = weight;
  if (tied) {
    auto e = embedding.lock();
    MEL_CHECK(e != nullptr,
              "LMHead: tied to the token embedding, but no embedding was bound "
              "(bind_tied_weights)");
    w = e->weight;
  }
  Tensor y = matmul(x, w.t());
  if (bias.defined()) y = add(y, bias);
  return y;
}

std::string LmHead::extra_repr() const {
  return fmt::format("in_features={}, out_features={}, bias={}{}", dim, vocab,
                     bias.defined() ? "True" : "False",
                     tied ? ", tied to the token embedding" : "");
}

namespace {
void collect(Module& m, std::vector<std::shared_ptr<TokenEmbedding>>& emb,
             std::vector<LmHead*>& heads) {
  for (auto& [name, c] : m.children()) {
    if (auto e = std::dynamic_pointer_cast<TokenEmbedding>(c)) emb.push_back(e);
    if (auto* h = dynamic_cast<LmHead*>(c.get()); h != nullptr && h->tied) heads.push_back(h);
    collect(*c, emb, heads);
  }
}
}  // namespace

void bind_tied_weights(Module& root, const std::string& what) {
  std::vector<std::shared_ptr<TokenEmbedding>> emb;
  std::vector<LmHead*> heads;
  collect(root, emb, heads);
  if (heads.empty()) return;
  MEL_CHECK(emb.size() == 1,
            "{}: an lm_head with \"tied\": true needs exactly one token_embedding in its model, "
            "found {}",
            what, emb.size());
  for (LmHead* h : heads) {
    MEL_CHECK(emb[0]->num_embeddings == h->vocab && emb[0]->embedding_dim == h->dim,
              "{}: the tied lm_head is [{}, {}] but the token embedding is [{}, {}]", what,
              h->vocab, h->dim, emb[0]->num_embeddings, emb[0]->embedding_dim);
    h->embedding = emb[0];
  }
}

// ---- registry ----------------------------------------------------------------------------------

namespace {

constexpr int64_t kMaxWidth = int64_t{1} << 20;
constexpr int64_t kMaxVocab = int64_t{1} << 24;
constexpr int64_t kMaxContext = int64_t{1} << 20;

int64_t int_in(const JsonReader& r, const std::string& key, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) r.error(key, fmt::format("must be in [{}, {}], got {}", lo, hi, v));
  return v;
}

double init_std_of(const JsonReader& r) {
  const double s = r.get_number("init_std", 0.02);
  if (!(s > 0.0 && s <= 10.0)) r.error("init_std", fmt::format("must be in (0, 10], got {}", s));
  return s;
}

const char* kTokens = "a [T] sequence of token ids per sample";
const char* kSequence = "a [T, D] sequence per sample";

}  // namespace

std::vector<LayerType> transformer_layer_types() {
  std::vector<LayerType> t;
  t.push_back({"token_embedding",
               [](const JsonReader& r, const Shape& in) -> std::shared_ptr<Module> {
                 require_dims(in, 1, kTokens);
                 const int64_t vocab = int_in(r, "vocab", r.get_int("vocab"), 1, kMaxVocab);
                 const int64_t dim = int_in(r, "dim", r.get_int("dim"), 1, kMaxWidth);
                 return std::make_shared<TokenEmbedding>(vocab, dim, init_std_of(r));
               },
               [](const Module& m, const Shape& in) {
                 return Shape{in[0], dynamic_cast<const TokenEmbedding&>(m).embedding_dim};
               },
               nullptr});
  t.push_back({"position_embedding",
               [](const JsonReader& r, const Shape& in) -> std::shared_ptr<Module> {
                 require_dims(in, 2, kSequence);
                 const int64_t context =
                     int_in(r, "context", r.get_int("context", in[0]), 1, kMaxContext);
                 if (in[0] > context) {
                   throw ShapeError(fmt::format("at most {} positions (the context)", context));
                 }
                 return std::make_shared<PositionEmbedding>(context, in[1], init_std_of(r));
               },
               nullptr, nullptr});
  t.push_back({"transformer",
               [](const JsonReader& r, const Shape& in) -> std::shared_ptr<Module> {
                 require_dims(in, 2, kSequence);
                 TransformerOptions o;
                 o.layers = int_in(r, "layers", r.get_int("layers"), 1, 1024);
                 o.heads = int_in(r, "heads", r.get_int("heads"), 1, 1024);
                 o.mlp_ratio = int_in(r, "mlp_ratio", r.get_int("mlp_ratio", 4), 1, 64);
                 o.dropout = r.get_number("dropout", 0.0);
                 if (!(o.dropout >= 0.0 && o.dropout < 1.0)) {
                   r.error("dropout", fmt::format("must be in [0, 1), got {}", o.dropout));
                 }
                 o.bias = r.get_bool("bias", true);
                 o.init_std = init_std_of(r);
                 o.activation = r.get_string("activation", "gelu");
                 try {
                   find_activation(o.activation);
                 } catch (const Error& e) {
                   r.error("activation", e.what());
                 }
                 if (in[1] % o.heads != 0) {
                   throw ShapeError(fmt::format("a width divisible by \"heads\" ({})", o.heads));
                 }
                 auto seq = std::make_shared<Sequential>();
                 for (int64_t i = 0; i < o.layers; ++i) {
                   seq->push_back(std::make_shared<TransformerBlock>(in[1], o));
                 }
                 return seq;
               },
               nullptr, nullptr});
  t.push_back({"rows",
               [](const JsonReader&, const Shape& in) -> std::shared_ptr<Module> {
                 require_dims(in, 2, kSequence);
                 return std::make_shared<Rows>();
               },
               [](const Module&, const Shape& in) { return Shape{in[1]}; }, nullptr});
  t.push_back({"lm_head",
               [](const JsonReader& r, const Shape& in) -> std::shared_ptr<Module> {
                 if (in.empty()) throw ShapeError("an input of at least one dimension");
                 const int64_t vocab = int_in(r, "vocab", r.get_int("vocab"), 1, kMaxVocab);
                 return std::make_shared<LmHead>(in.back(), vocab, r.get_bool("tied", false),
                                                 r.get_bool("bias", false), init_std_of(r));
               },
               [](const Module& m, const Shape& in) {
                 Shape out = in;
                 out.back() = dynamic_cast<const LmHead&>(m).vocab;
                 return out;
               },
               nullptr});
  return t;
}

}  // namespace mel::nn
