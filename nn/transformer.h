// The layers of GPT-style language models (nanoGPT's layout and names): token and learned
// position embeddings, pre-norm transformer blocks with fused causal self-attention and a GELU
// MLP, the language-model head (optionally tied to the token embedding), and `Rows`, which turns
// every position of a sequence into a row of its own so that per-position logits reach the
// losses and metrics written for [rows, classes].
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "nn/layers.h"

namespace mel::nn {

// Linear with GPT's initialisation: weight N(0, std^2), bias 0.
class GptLinear : public Linear {
 public:
  GptLinear(int64_t in, int64_t out, bool bias, double init_std)
      : Linear(in, out, bias), init_std(init_std) {}
  double init_std;

 protected:
  void init_parameters(Generator& gen) override;
};

// Token embedding with weight N(0, init_std^2) (PyTorch's default is 1; GPT uses 0.02).
class TokenEmbedding : public Embedding {
 public:
  TokenEmbedding(int64_t vocab, int64_t dim, double init_std)
      : Embedding(vocab, dim), init_std(init_std) {}
  double init_std;

 protected:
  void init_parameters(Generator& gen) override;
};

// x [B, T, D] + weight[:T]; weight [context, D], N(0, init_std^2). A sequence longer than the
// context is an error naming both lengths.
class PositionEmbedding : public Module {
 public:
  PositionEmbedding(int64_t context, int64_t dim, double init_std);
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  Tensor weight;
  int64_t context, dim;
  double init_std;

 protected:
  void init_parameters(Generator& gen) override;
};

struct TransformerOptions {
  int64_t layers = 1;
  int64_t heads = 1;
  int64_t mlp_ratio = 4;
  double dropout = 0.0;  // after the attention's and the MLP's output projections
  bool bias = true;
  double init_std = 0.02;  // c_proj layers: init_std / sqrt(2 * layers) (GPT-2)
  std::string activation = "gelu";
};

// x + c_proj(attention(c_attn(x))): c_attn D -> 3D (q, k, v), the fused causal attention
// (core/ops_attention.h), c_proj D -> D, dropout.
class CausalSelfAttention : public Module {
 public:
  CausalSelfAttention(int64_t dim, const TransformerOptions& o);
  Tensor forward(const Tensor& x) override;  // [B, T, D] -> [B, T, D] (without the residual)
  std::string extra_repr() const override;
  std::shared_ptr<GptLinear> c_attn, c_proj;
  std::shared_ptr<Dropout> resid_dropout;
  int64_t heads;
};

class Mlp : public Module {
 public:
  Mlp(int64_t dim, const TransformerOptions& o);
  Tensor forward(const Tensor& x) override;
  std::shared_ptr<GptLinear> c_fc, c_proj;
  std::shared_ptr<ActivationLayer> act;
  std::shared_ptr<Dropout> dropout;
};

// Pre-norm block: x + attn(ln_1(x)), then + mlp(ln_2(x)).
class TransformerBlock : public Module {
 public:
  TransformerBlock(int64_t dim, const TransformerOptions& o);
  Tensor forward(const Tensor& x) override;
  std::shared_ptr<LayerNorm> ln_1, ln_2;
  std::shared_ptr<CausalSelfAttention> attn;
  std::shared_ptr<Mlp> mlp;
};

// [B, T, D] -> [B * T, D]: each position a row (per sample: [T, D] -> [D], the batch T-fold).
class Rows : public Module {
 public:
  Rows() : Module("Rows") {}
  Tensor forward(const Tensor& x) override;
};

// The language-model head: x [..., D] -> [..., V] logits. Untied: its own weight [V, D]
// (N(0, init_std^2)) and optional bias. Tied: it reads the weight of a TokenEmbedding bound by
// bind_tied_weights (the embedding's [V, D] matrix; no parameter of its own, as GPT-2 ties
// lm_head.weight to wte.weight).
class LmHead : public Module {
 public:
  LmHead(int64_t dim, int64_t vocab, bool tied, bool bias, double init_std);
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  Tensor weight, bias;  // weight undefined when tied
  int64_t dim, vocab;
  bool tied;
  double init_std;
  // The tied embedding (set by bind_tied_weights; not a child, so not saved twice).
  std::weak_ptr<TokenEmbedding> embedding;

 protected:
  void init_parameters(Generator& gen) override;
};

// Binds every tied LmHead under `root` to the TokenEmbedding under `root` (there must be exactly
// one, of the head's vocabulary and width); `what` names the model in errors.
void bind_tied_weights(Module& root, const std::string& what);

// The registry's token_embedding, position_embedding, transformer, rows and lm_head types
// (nn/registry.h; registered with the built-in types) are declared in nn/builtin_layers.cpp.

}  // namespace mel::nn
