#!/usr/bin/python3
"""The character-level GPT configs and recipe written in PyTorch, on the same corpus as mel.

A reference to compare mel against: it builds the architecture of a mel text config
(configs/text_original.json: one GPT; text_mel2.json, text_mel3.json: M smaller GPTs, each with
its own exit, and linear combination heads over the concatenated last hidden states of every
subset of two or more, at every position) from the same JSON, trains it with the same recipe
(AdamW with norms and biases excluded from weight decay, global-norm gradient clipping, cosine
schedule with linear warm-up stepped per batch, random windows of the training text, dropout, the
MEL joint loss: the sum over every exit and head of its weight times its mean cross-entropy) and
prints the validation loss of every predictor (nats/char, bits/char, next-character accuracy) at
chosen steps and the mean time per training step.

The corpus is read exactly as mel's data/text.cpp reads it (files *.txt sorted by name, documents
between lines "%", whitespace-only documents dropped, the split by FNV-1a-64 of each document, the
vocabulary of every document's code points in ascending order, one '\\n' after each document), so
both sides see the same token streams and the same validation windows (starts 0, T, 2T, ...).
The training windows are drawn by torch's generator, not mel's SplitMix64 stream.

    /usr/bin/python3 tools/torch_text.py configs/text_mel2.json --threads 2 --json /tmp/t.json
    /usr/bin/python3 tools/torch_text.py configs/text_original.json --epochs 1 \\
        --batches-per-epoch 5 --batch 4 --eval-windows 20

Needs Debian's python3-torch (torch 1.13: attention is written out, as there is no
F.scaled_dot_product_attention). Runs on the CPU unless --device says otherwise.
"""
import argparse
import itertools
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

# ---- the corpus (data/text.cpp) ----------------------------------------------------------------

TEXT_SPACE = set(" \t\n\r\v\f")


def default_corpus_dir():
    home = os.environ.get("MEL_DATA_HOME")
    if home:
        return os.path.join(home, "fortunes")
    return os.path.join(os.environ.get("HOME") or ".", ".local/share/mel/fortunes")


def parse_corpus(data, name):
    """The documents of one file's bytes: text between lines "%", each its lines joined with '\\n'
    plus a final '\\n'; whitespace-only documents dropped."""
    if b"\0" in data:
        sys.exit(f"torch_text: {name}: a NUL byte (expected UTF-8 text)")
    try:
        data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as e:
        sys.exit(f"torch_text: {name}: invalid UTF-8 at byte offset {e.start}")
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":  # the '\n' ending the last line starts no line of its own
        lines.pop()
    docs, cur = [], []

    def flush():
        text = b"".join(l + b"\n" for l in cur).decode("utf-8")
        if any(c not in TEXT_SPACE for c in text):
            docs.append(text)

    for i, l in enumerate(lines):
        if l == b"%":
            flush()
            cur = []
            continue
        if l == b"%\r":
            sys.exit(f"torch_text: {name}: line {i + 1} is \"%\" with a CRLF line ending")
        cur.append(l)
    flush()
    return docs


def fnv1a64(data):
    h = 14695981039346656037
    for c in data:
        h = ((h ^ c) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def load_text(folder, fraction, vocabulary=""):
    names = sorted((n for n in os.listdir(folder)
                    if n.endswith(".txt") and not n.startswith(".")
                    and os.path.isfile(os.path.join(folder, n))), key=os.fsencode)
    if not names:
        sys.exit(f"torch_text: {folder} has no .txt files (make it with scripts/make_text_corpus.sh)")
    docs = []
    for n in names:
        with open(os.path.join(folder, n), "rb") as f:
            docs.extend(parse_corpus(f.read(), n))
    # The vocabulary of every document of the corpus, both splits (data/text.h load_text_data),
    # unless the config stores one (data.text.vocabulary).
    chars = list(vocabulary) if vocabulary else sorted(set("".join(docs)))
    ids = {c: i for i, c in enumerate(chars)}
    missing = set("".join(docs)) - set(ids)
    if missing:
        sys.exit(f"torch_text: the given vocabulary lacks {len(missing)} characters of the corpus")
    train, val = [], []
    for d in docs:
        (val if fnv1a64(d.encode("utf-8")) % 1000000 < fraction * 1000000 else train).append(d)
    if not train or not val:
        sys.exit(f"torch_text: an empty split with validation_fraction {fraction}")

    def encode(ds):
        return torch.tensor([ids[c] for d in ds for c in d + "\n"], dtype=torch.long)

    return {"chars": chars, "train": encode(train), "validation": encode(val),
            "train_documents": len(train), "validation_documents": len(val),
            "documents": len(docs), "files": len(names)}


# ---- the layers (nn/transformer.cpp, nn/layers.cpp) --------------------------------------------

def activation(name):
    acts = {"gelu": nn.GELU(), "gelu_tanh": nn.GELU(approximate="tanh"), "relu": nn.ReLU(),
            "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(), "silu": nn.SiLU()}
    if name not in acts:
        sys.exit(f"torch_text: activation '{name}' is not written here")
    return acts[name]


class PositionEmbedding(nn.Module):
    def __init__(self, context, dim, init_std):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(context, dim).normal_(0.0, init_std))

    def forward(self, x):
        return x + self.weight[:x.shape[1]]


class CausalSelfAttention(nn.Module):
    """c_attn D -> 3D (q, k, v; head h at columns h*Dh..), causal softmax(q k^T / sqrt(Dh)) v,
    c_proj, dropout after the projection (mel has no dropout on the attention probabilities)."""

    def __init__(self, dim, o):
        super().__init__()
        self.heads = o["heads"]
        self.c_attn = nn.Linear(dim, 3 * dim, bias=o["bias"])
        self.c_proj = nn.Linear(dim, dim, bias=o["bias"])
        self.resid_dropout = nn.Dropout(o["dropout"])

    def forward(self, x):
        b, t, d = x.shape
        h = self.heads
        q, k, v = self.c_attn(x).split(d, 2)
        q, k, v = (z.view(b, t, h, d // h).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d // h))
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        return self.resid_dropout(self.c_proj(y))


class Mlp(nn.Module):
    def __init__(self, dim, o):
        super().__init__()
        self.c_fc = nn.Linear(dim, o["mlp_ratio"] * dim, bias=o["bias"])
        self.act = activation(o["activation"])
        self.c_proj = nn.Linear(o["mlp_ratio"] * dim, dim, bias=o["bias"])
        self.dropout = nn.Dropout(o["dropout"])

    def forward(self, x):
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, dim, o):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = CausalSelfAttention(dim, o)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, o)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Rows(nn.Module):
    """[B, T, D] -> [B * T, D]: every position a row of its own."""

    def forward(self, x):
        return x.reshape(-1, x.shape[-1])


class LmHead(nn.Module):
    """x @ W^T (+ b): W its own [V, D] (N(0, init_std^2)), or the token embedding's when tied
    (GPT-2's lm_head.weight = wte.weight; not a parameter of the head, so counted once)."""

    def __init__(self, dim, vocab, tied, bias, init_std):
        super().__init__()
        self.tied = tied
        self.weight = None if tied else nn.Parameter(torch.empty(vocab, dim).normal_(0.0, init_std))
        self.bias = nn.Parameter(torch.zeros(vocab)) if bias else None
        self._embedding = []  # a plain list: the embedding is not a child of the head

    def forward(self, x):
        w = self._embedding[0].weight if self.tied else self.weight
        return F.linear(x, w, self.bias)


def gpt_linear(layer, std):
    with torch.no_grad():
        layer.weight.normal_(0.0, std)
        if layer.bias is not None:
            layer.bias.zero_()
    return layer


def vocab_of(s, vocab):
    v = s["vocab"]
    return vocab if v == "data" else int(v)


def build_layers(specs, shape, vocab):
    """nn.Sequential of a mel layer list, and the output shape per sample."""
    layers = []
    shape = list(shape)
    for s in specs:
        t = s["type"]
        std = s.get("init_std", 0.02)
        if t == "token_embedding":
            assert len(shape) == 1, "token_embedding needs a [T] input"
            e = nn.Embedding(vocab_of(s, vocab), s["dim"])
            with torch.no_grad():
                e.weight.normal_(0.0, std)
            layers.append(e)
            shape = [shape[0], s["dim"]]
        elif t == "position_embedding":
            layers.append(PositionEmbedding(s.get("context", shape[0]), shape[1], std))
        elif t == "dropout":
            layers.append(nn.Dropout(s.get("p", 0.5)))
        elif t == "transformer":
            o = {"layers": s["layers"], "heads": s["heads"], "mlp_ratio": s.get("mlp_ratio", 4),
                 "dropout": s.get("dropout", 0.0), "bias": s.get("bias", True),
                 "activation": s.get("activation", "gelu")}
            proj_std = std / math.sqrt(2.0 * o["layers"])
            blocks = []
            for _ in range(o["layers"]):
                b = Block(shape[1], o)
                gpt_linear(b.attn.c_attn, std)
                gpt_linear(b.attn.c_proj, proj_std)
                gpt_linear(b.mlp.c_fc, std)
                gpt_linear(b.mlp.c_proj, proj_std)
                blocks.append(b)
            layers.append(nn.Sequential(*blocks))
        elif t == "rows":
            layers.append(Rows())
            shape = [shape[1]]
        elif t == "layernorm":
            if not s.get("affine", True):
                layers.append(nn.LayerNorm(shape[-1], eps=s.get("eps", 1e-5), elementwise_affine=False))
            else:
                layers.append(nn.LayerNorm(shape[-1], eps=s.get("eps", 1e-5)))
        elif t == "lm_head":
            layers.append(LmHead(shape[-1], vocab_of(s, vocab), s.get("tied", False),
                                 s.get("bias", False), std))
            shape = shape[:-1] + [vocab_of(s, vocab)]
        elif t == "linear":
            layers.append(nn.Linear(shape[-1], s["out"], bias=s.get("bias", True)))
            shape = shape[:-1] + [s["out"]]
        elif t in ("gelu", "gelu_tanh", "relu", "tanh", "sigmoid", "silu"):
            layers.append(activation(t))
        else:
            sys.exit(f"torch_text: layer type '{t}' is not written here")
    return nn.Sequential(*layers), shape


def bind_tied(*seqs):
    """Ties every tied LmHead of the modules to their one token embedding (nn/transformer.cpp)."""
    emb = [m for s in seqs for m in s.modules() if isinstance(m, nn.Embedding)]
    heads = [m for s in seqs for m in s.modules() if isinstance(m, LmHead) and m.tied]
    if heads:
        assert len(emb) == 1, "a tied lm_head needs exactly one token_embedding in its model"
        for h in heads:
            h._embedding[:] = [emb[0]]


class Single(nn.Module):
    def __init__(self, cfg, vocab):
        super().__init__()
        m = cfg["model"]
        self.trunk, feat = build_layers(m["trunk"], m["input"], vocab)
        self.head, _ = build_layers(m["head"], feat, vocab)
        bind_tied(self.trunk, self.head)
        self.names, self.weights = ["1"], [1.0]
        self.context = m["input"][0]
        self.pairs = []

    def forward(self, x):
        return [self.head(self.trunk(x))]

    def counts(self):
        return {"total": sum(p.numel() for p in self.parameters())}


class Upstream(nn.Module):
    def __init__(self, up, vocab):
        super().__init__()
        full = up["backbone"]
        cut = up.get("cut", len(full))
        self.backbone, self.feat = build_layers(full[:cut], up["input"], vocab)
        self.exit, _ = build_layers(up["exit"], self.feat, vocab)
        bind_tied(self.backbone, self.exit)


class Ensemble(nn.Module):
    """M upstream models (backbone -> features, exit -> logits) and one head per subset: a
    LayerNorm over the concatenated features when "norm", then Linear (PyTorch's default init,
    as mel's Linear), or Linear, activation, Linear for mlp heads."""

    def __init__(self, cfg, vocab):
        super().__init__()
        e = cfg["ensemble"]
        if cfg.get("baseline", "joint") != "joint":
            sys.exit("torch_text: only the joint baseline is written here")
        ups = e["upstream"] if isinstance(e["upstream"], list) else [e["upstream"]] * e["models"]
        m = len(ups)
        self.upstream = nn.ModuleList(Upstream(u, vocab) for u in ups)
        h = e.get("heads", {})
        kind = h.get("type", "linear")
        subs = h.get("subsets", "all")
        if subs == "all":
            self.subsets = [list(s) for k in range(2, m + 1) for s in itertools.combinations(range(m), k)]
        else:
            self.subsets = [sorted(i - 1 for i in s) for s in subs]
        self.heads = nn.ModuleDict()
        for s in self.subsets:
            width = sum(self.upstream[i].feat[0] for i in s)
            layers = [nn.LayerNorm(width, eps=1e-5)] if h.get("norm", False) else []
            if kind == "linear":
                layers.append(nn.Linear(width, vocab))
            elif kind == "mlp":
                hid = h.get("hidden", 256)
                layers += [nn.Linear(width, hid), activation(h.get("activation", "relu")),
                           nn.Linear(hid, vocab)]
            else:
                sys.exit(f"torch_text: head type '{kind}' is not written here")
            self.heads["+".join(str(i + 1) for i in s)] = nn.Sequential(*layers)
        self.names = [str(i + 1) for i in range(m)] + list(self.heads.keys())
        loss = e.get("loss", {})
        w = {int(k): v for k, v in loss.get("size_weights", {}).items()}
        self.weights = [w.get(1, 1.0)] * m + [w.get(len(s), 1.0) for s in self.subsets]
        div = loss.get("diversity", {})
        self.div_weight, self.div_margin = div.get("weight", 0.0), div.get("margin", 1.0)
        self.pairs = [(i, j) for i in range(m) for j in range(i + 1, m)] if self.div_weight > 0 else []
        if loss.get("hierarchical", False):
            sys.exit("torch_text: hierarchical labels are not written here")
        self.context = ups[0]["input"][0]

    def forward(self, x):
        feats = [u.backbone(x) for u in self.upstream]
        out = [u.exit(f) for u, f in zip(self.upstream, feats)]
        for s, head in zip(self.subsets, self.heads.values()):
            out.append(head(torch.cat([feats[i] for i in s], 1)))
        return out

    def counts(self):
        c = {"total": sum(p.numel() for p in self.parameters())}
        for i, u in enumerate(self.upstream):
            c[f"upstream {i + 1}"] = sum(p.numel() for p in u.parameters())
        c["heads"] = sum(p.numel() for p in self.heads.parameters())
        return c


def joint_loss(model, logits, y, smoothing):
    """mel's fused joint loss (mel/joint_loss.h): sum_k w_k CE_k, each CE_k the mean over the rows
    (every position), plus lambda_div sum_{i<j} max(0, margin - mean_b ||z_i - z_j||^2)."""
    terms = [F.cross_entropy(z, y, label_smoothing=smoothing) for z in logits]
    total = sum(w * t for w, t in zip(model.weights, terms))
    for i, j in model.pairs:
        d = logits[i] - logits[j]
        total = total + model.div_weight * F.relu(model.div_margin - (d * d).sum() / y.numel())
    return total, terms


# ---- the recipe (train/config.cpp, nn/schedule.cpp, nn/optim.cpp) ------------------------------

def make_schedule(sch, opt_cfg, steps_per_epoch, epochs):
    """lr (and beta1 / momentum or None) of optimizer step `step` (0-based), as nn/schedule.cpp."""
    total = steps_per_epoch * epochs
    lr = opt_cfg.get("lr", 1e-3)
    t = sch.get("type", "constant")
    if t == "cosine":
        warm = min(int(math.floor(sch.get("warmup_epochs", 0.0) * steps_per_epoch + 0.5)), total - 1)
        min_lr = sch.get("min_lr", 0.0)

        def at(step):
            if step < warm:
                return lr * (step + 1) / (warm + 1), None
            p = min(1.0, (step - warm) / (total - warm))
            return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * p)), None
        return at
    if t == "step":
        size = max(1, int(math.floor(sch["step_epochs"] * steps_per_epoch + 0.5)))
        return lambda step: (lr * sch.get("gamma", 0.1) ** (step // size), None)
    if t == "onecycle":
        max_lr = sch.get("max_lr", 0.0) or lr
        init = max_lr / sch.get("div_factor", 25.0)
        low = init / sch.get("final_div_factor", 1e4)
        end1, end2 = sch.get("pct_start", 0.3) * total - 1.0, total - 1.0
        cos = sch.get("anneal", "cos") == "cos"
        cyc = sch.get("cycle_momentum", True) and not (
            opt_cfg.get("type") == "sgd" and opt_cfg.get("momentum", 0.0) == 0.0)
        bm, mm = sch.get("base_momentum", 0.85), sch.get("max_momentum", 0.95)

        def ann(a, b, p):
            return b + (a - b) / 2.0 * (math.cos(math.pi * p) + 1.0) if cos else (b - a) * p + a

        def at(step):
            if step <= end1:
                p = step / end1
                return ann(init, max_lr, p), (ann(mm, bm, p) if cyc else None)
            p = (step - end1) / (end2 - end1)
            return ann(max_lr, low, p), (ann(bm, mm, p) if cyc else None)
        return at
    return lambda step: (lr, None)


def make_optimizer(model, o):
    params = list(model.parameters())
    if o.get("exclude_from_decay", "none") == "norms_and_biases":
        groups = [{"params": [p for p in params if p.dim() >= 2]},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    else:
        groups = [{"params": params}]
    t, lr, wd = o.get("type", "adam"), o.get("lr", 1e-3), o.get("weight_decay", 0.0)
    if t == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=o.get("momentum", 0.0),
                               dampening=o.get("dampening", 0.0), weight_decay=wd,
                               nesterov=o.get("nesterov", False))
    cls = torch.optim.AdamW if t == "adamw" else torch.optim.Adam
    return cls(groups, lr=lr, betas=tuple(o.get("betas", [0.9, 0.999])), eps=o.get("eps", 1e-8),
               weight_decay=wd)


# ---- main --------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--data", help="the corpus folder (default: $MEL_DATA_HOME/fortunes, else "
                                   "~/.local/share/mel/fortunes)")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--batches-per-epoch", type=int, help="default: data.text.batches_per_epoch")
    ap.add_argument("--batch", type=int, help="windows per training step (default: train.batch_size)")
    ap.add_argument("--eval-batch", type=int, help="windows per evaluation batch (default: "
                                                   "train.eval_batch_size)")
    ap.add_argument("--eval-every", type=int, default=0,
                    help="evaluate every N training steps (0: at the end of each epoch)")
    ap.add_argument("--eval-windows", type=int, default=0,
                    help="at most this many validation windows (mel's --test-limit; 0: all)")
    ap.add_argument("--train-limit", type=int, help="keep the first N characters of the training "
                                                    "stream (mel's --train-limit; default: "
                                                    "train.train_limit, 0: all)")
    ap.add_argument("--seed", type=int, help="default: train.seed")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()

    cfg = json.load(open(a.config))
    tr = cfg["train"]
    dcfg = cfg.get("data", {})
    if dcfg.get("dataset") != "text":
        sys.exit("torch_text: the config's data.dataset is not \"text\"")
    tcfg = dcfg.get("text", {})
    epochs = a.epochs or tr.get("epochs", 10)
    spe = a.batches_per_epoch or tcfg.get("batches_per_epoch", 100)
    bs = a.batch or tr.get("batch_size", 256)
    ebs = a.eval_batch or tr.get("eval_batch_size", 1000)
    seed = tr.get("seed", 0) if a.seed is None else a.seed
    smoothing = tr.get("label_smoothing", 0.0)
    clip = tr.get("clip_grad_norm", 0.0)
    if tr.get("failout"):
        sys.exit("torch_text: failout is not written here")
    torch.manual_seed(seed)
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)

    folder = a.data or dcfg.get("dir") or default_corpus_dir()
    t0 = time.perf_counter()
    data = load_text(folder, tcfg.get("validation_fraction", 0.1), tcfg.get("vocabulary", ""))
    vocab = len(data["chars"])
    xtr, xva = data["train"], data["validation"]
    limit = tr.get("train_limit", 0) if a.train_limit is None else a.train_limit
    if 0 < limit < len(xtr):
        xtr = xtr[:limit]
    print(f"corpus {folder}: {data['files']} files, {data['documents']} documents, vocabulary "
          f"{vocab}; train {data['train_documents']} documents {len(xtr):,} chars, validation "
          f"{data['validation_documents']} documents {len(xva):,} chars "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)

    mel = cfg.get("kind") == "mel"
    model = (Ensemble(cfg, vocab) if mel else Single(cfg, vocab)).to(dev)
    T = model.context
    counts = model.counts()
    if mel and "original" in cfg:
        orig = json.load(open(os.path.join(os.path.dirname(a.config), cfg["original"])))
        counts["original"] = Single(orig, vocab).counts()["total"]
    elif mel and "original_params" in cfg:
        counts["original"] = cfg["original_params"]

    opt_cfg, sch = tr.get("optimizer", {}), tr.get("schedule", {})
    opt = make_optimizer(model, opt_cfg)
    schedule = make_schedule(sch, opt_cfg, spe, epochs)
    total_steps = epochs * spe
    gen = torch.Generator().manual_seed(seed)
    n_train = len(xtr)
    assert n_train >= T + 1 and len(xva) >= T + 1, "a split is shorter than the context + 1"
    offs = torch.arange(T + 1)
    nwin = (len(xva) - 1) // T
    if a.eval_windows > 0:
        nwin = min(nwin, a.eval_windows)
    print(f"torch {torch.__version__}: {cfg['name']}, parameters "
          + ", ".join(f"{k} {v:,}" for k, v in counts.items())
          + f"; context {T}, batch {bs}, {spe} steps/epoch, {epochs} epochs ({total_steps} steps), "
          f"{nwin} validation windows ({nwin * T:,} positions), {torch.get_num_threads()} threads",
          flush=True)

    names = model.names
    m_exits = len(model.upstream) if mel else 0
    exit_sets = [list(s) for k in range(2, m_exits + 1)
                 for s in itertools.combinations(range(m_exits), k)] if 2 <= m_exits <= 8 else []

    def evaluate():
        """Sequential windows 0, T, 2T, ... (every position counted): per predictor the mean
        cross-entropy over all positions and the accuracy; the weighted joint loss per position
        and as mel's ensemble tally reports it (the mean over evaluation batches of each batch's
        mean); the loss and accuracy of the exits' averaged probabilities (mel's "combined")."""
        model.eval()
        k = len(names)
        nll, correct = [0.0] * k, [0] * k
        avg_correct, avg_nll = [0] * len(exit_sets), [0.0] * len(exit_sets)
        batch_totals = []
        with torch.no_grad():
            for b0 in range(0, nwin, ebs):
                starts = torch.arange(b0, min(nwin, b0 + ebs)) * T
                w = xva[starts[:, None] + offs]
                x, y = w[:, :T].to(dev), w[:, 1:].reshape(-1).to(dev)
                out = model(x)
                total, terms = joint_loss(model, out, y, smoothing)
                batch_totals.append(total.item())
                for i, z in enumerate(out):
                    nll[i] += F.cross_entropy(z, y, reduction="sum").item()
                    correct[i] += (z.argmax(1) == y).sum().item()
                if exit_sets:
                    probs = [z.softmax(1).double() for z in out[:m_exits]]
                    for j, s in enumerate(exit_sets):
                        p = sum(probs[i] for i in s)
                        avg_correct[j] += (p.argmax(1) == y).sum().item()
                        py = p.gather(1, y[:, None]).squeeze(1) / len(s)
                        avg_nll[j] -= py.clamp_min(1e-300).log().sum().item()
        model.train()
        n = nwin * T
        res = {names[i]: {"loss": nll[i] / n, "bpc": nll[i] / n / math.log(2),
                          "accuracy": correct[i] / n} for i in range(k)}
        joint = sum(w * res[nm]["loss"] for w, nm in zip(model.weights, names))
        extra = {"joint_loss": joint, "joint_loss_batch_mean": sum(batch_totals) / len(batch_totals)}
        if exit_sets:
            # mel's "combined": the exits' probabilities averaged over each set of two or more
            extra["averaged_exits"] = {
                ",".join(str(i + 1) for i in s): {"loss": l / n, "bpc": l / n / math.log(2),
                                                  "accuracy": c / n}
                for s, c, l in zip(exit_sets, avg_correct, avg_nll)}
        return res, extra

    evals, step_times, train_losses = [], [], []

    def run_eval(step, epoch):
        t = time.perf_counter()
        res, extra = evaluate()
        secs = time.perf_counter() - t
        recent = train_losses[-spe:]
        line = {"step": step, "epoch": epoch, "train_loss": sum(recent) / max(1, len(recent)),
                "validation": res, **extra, "eval_seconds": secs}
        evals.append(line)
        print(f"step {step} (epoch {epoch:.2f}): train loss {line['train_loss']:.4f}, val "
              + "  ".join(f"{nm} {r['loss']:.4f} nats {r['bpc']:.4f} bpc {100 * r['accuracy']:.2f}%"
                          for nm, r in res.items())
              + (f"  joint {extra['joint_loss']:.4f}" if mel else "")
              + "".join(f"  avg({nm}) {r['loss']:.4f} nats {100 * r['accuracy']:.2f}%"
                        for nm, r in extra.get("averaged_exits", {}).items())
              + f" ({secs:.1f} s)",
              flush=True)

    model.train()
    step = 0
    for epoch in range(epochs):
        for _ in range(spe):
            t = time.perf_counter()
            lr, mom = schedule(step)
            for g in opt.param_groups:
                g["lr"] = lr
                if mom is not None:
                    if "betas" in g:
                        g["betas"] = (mom, g["betas"][1])
                    else:
                        g["momentum"] = mom
            starts = torch.randint(0, n_train - T, (bs,), generator=gen)
            w = xtr[starts[:, None] + offs]
            x, y = w[:, :T].to(dev), w[:, 1:].reshape(-1).to(dev)
            opt.zero_grad(set_to_none=True)
            loss, _ = joint_loss(model, model(x), y, smoothing)
            loss.backward()
            if clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                if not math.isfinite(norm.item()):
                    sys.exit(f"torch_text: the gradient norm became {norm.item()} at step {step}")
            opt.step()
            train_losses.append(loss.item())
            step += 1
            if dev.type == "cuda":
                torch.cuda.synchronize()
            step_times.append(time.perf_counter() - t)
            if a.eval_every > 0 and step % a.eval_every == 0:
                run_eval(step, step / spe)
        if a.eval_every <= 0:
            run_eval(step, step / spe)
    if not evals or evals[-1]["step"] != step:
        run_eval(step, step / spe)

    timed = step_times[3:] if len(step_times) > 3 else step_times
    sps = sum(timed) / len(timed)
    print(f"mean {sps * 1000:.1f} ms per training step (over {len(timed)} steps, the first "
          f"{len(step_times) - len(timed)} left out), {bs * T / sps:,.0f} chars/s", flush=True)
    result = {"config": cfg["name"], "framework": f"torch {torch.__version__}",
              "device": str(dev), "threads": torch.get_num_threads(), "data": folder,
              "vocabulary": vocab, "train_documents": data["train_documents"],
              "validation_documents": data["validation_documents"], "train_chars": len(xtr),
              "validation_chars": len(xva), "validation_windows": nwin, "context": T,
              "parameters": counts, "epochs": epochs, "batches_per_epoch": spe,
              "batch_size": bs, "eval_batch_size": ebs, "seed": seed, "steps": step,
              "predictors": names, "loss_weights": dict(zip(names, model.weights)),
              "evaluations": evals, "final": evals[-1]["validation"],
              "seconds_per_step": sps, "timed_steps": len(timed)}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
