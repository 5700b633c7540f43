#!/usr/bin/python3
"""The spoken-word configs and recipe written in PyTorch, on the features mel computed.

A reference to compare mel against: it builds the architecture of a mel config
(configs/speech_original.json, speech_mel2.json, speech_mel3.json: a single model, or M upstream
models with their exits and linear combination heads over every subset of two or more) from the
same JSON, trains it with the same recipe (Adam, one-cycle schedule stepped per batch, batch size,
epochs, SpecAugment masks, the MEL joint loss: the sum of every exit's and head's cross-entropy,
weighted by subset size) and prints the test accuracy of every predictor and the time per epoch.

The features come from mel, so both sides see the same numbers:

    mel features configs/speech_mel2.json --out /tmp/speech-features
    /usr/bin/python3 tools/torch_speech.py configs/speech_mel2.json --features /tmp/speech-features

Needs Debian's python3-torch and python3-numpy (not installed by scripts/setup.sh: only this
comparison uses them). Runs on the CPU unless --device says otherwise.
"""
import argparse
import itertools
import json
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def build_layers(specs, shape):
    """nn.Sequential of a mel layer list, and the output shape per sample."""
    layers = []
    c, h, w = shape if len(shape) == 3 else (shape[0], None, None)
    flat = len(shape) == 1
    for s in specs:
        t = s["type"]
        if t == "conv2d":
            k = s.get("kernel", 3)
            k = (k, k) if isinstance(k, int) else tuple(k)
            st = s.get("stride", 1)
            st = (st, st) if isinstance(st, int) else tuple(st)
            p = s.get("padding", 0)
            p = (p, p) if isinstance(p, int) else tuple(p)
            layers.append(nn.Conv2d(c, s["out"], k, st, p, bias=s.get("bias", True)))
            c = s["out"]
            h = (h + 2 * p[0] - k[0]) // st[0] + 1
            w = (w + 2 * p[1] - k[1]) // st[1] + 1
        elif t == "batchnorm2d":
            layers.append(nn.BatchNorm2d(c, eps=s.get("eps", 1e-5), momentum=s.get("momentum", 0.1)))
        elif t == "relu":
            layers.append(nn.ReLU())
        elif t == "maxpool2d":
            k = s.get("kernel", 2)
            layers.append(nn.MaxPool2d(k))
            h //= k
            w //= k
        elif t == "global_avg_pool":
            layers.append(nn.AdaptiveAvgPool2d(1))
            layers.append(nn.Flatten())
            flat = True
        elif t == "dropout":
            layers.append(nn.Dropout(s.get("p", 0.5)))
        elif t == "linear":
            layers.append(nn.Linear(c, s["out"], bias=s.get("bias", True)))
            c = s["out"]
        else:
            sys.exit(f"torch_speech: layer type '{t}' is not written here")
    return nn.Sequential(*layers), ([c] if flat else [c, h, w])


class Ensemble(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        e = cfg["ensemble"]
        m = e["models"]
        up = e["upstream"]
        self.backbones, self.exits = nn.ModuleList(), nn.ModuleList()
        for _ in range(m):
            b, feat = build_layers(up["backbone"], up["input"])
            x, _ = build_layers(up["exit"], feat)
            self.backbones.append(b)
            self.exits.append(x)
        self.subsets = [list(s) for k in range(2, m + 1) for s in itertools.combinations(range(m), k)]
        self.heads = nn.ModuleList(nn.Linear(feat[0] * len(s), up["exit"][-1]["out"]) for s in self.subsets)
        self.names = [str(i + 1) for i in range(m)] + [
            ",".join(str(i + 1) for i in s) for s in self.subsets]
        w = {int(k): v for k, v in e.get("loss", {}).get("size_weights", {}).items()}
        self.weights = [w.get(1, 1.0)] * m + [w.get(len(s), 1.0) for s in self.subsets]

    def forward(self, x):
        feats = [b(x) for b in self.backbones]
        out = [ex(f) for ex, f in zip(self.exits, feats)]
        for head, s in zip(self.heads, self.subsets):
            out.append(head(torch.cat([feats[i] for i in s], 1)))
        return out


class Single(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        trunk, feat = build_layers(cfg["model"]["trunk"], cfg["model"]["input"])
        head, _ = build_layers(cfg["model"]["head"], feat)
        self.net = nn.Sequential(trunk, head)
        self.names, self.weights = ["1"], [1.0]

    def forward(self, x):
        return [self.net(x)]


def spec_augment(x, sa, gen):
    """Masks rows (frequency) and columns (time) of each [C, F, T] map in place, to 0."""
    b, _, f, t = x.shape
    for axis, count, width, size in (
            (2, sa.get("freq_masks", 0), sa.get("freq_width", 0), f),
            (3, sa.get("time_masks", 0), sa.get("time_width", 0), t)):
        cap = min(width, size)
        for _ in range(count if cap > 0 else 0):
            wid = torch.randint(0, cap + 1, (b,), generator=gen)
            start = (torch.rand(b, generator=gen) * (size - wid + 1).float()).long()
            pos = torch.arange(size)
            mask = (pos[None, :] >= start[:, None]) & (pos[None, :] < (start + wid)[:, None])
            if axis == 2:
                x.masked_fill_(mask[:, None, :, None], 0.0)
            else:
                x.masked_fill_(mask[:, None, None, :], 0.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--features", required=True, help="the folder `mel features` wrote")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()

    cfg = json.load(open(a.config))
    tr = cfg["train"]
    epochs = a.epochs or tr["epochs"]
    torch.manual_seed(a.seed)
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)

    def load(split):
        x = np.load(f"{a.features}/{split}_x.npy")
        y = np.load(f"{a.features}/{split}_y.npy")
        mean, std = cfg["data"]["mean"][0], cfg["data"]["std"][0]
        return torch.from_numpy((x.astype(np.float64) - mean) / std).float(), torch.from_numpy(y).long()

    xtr, ytr = load("train")
    xte, yte = load("test")
    model = (Ensemble(cfg) if cfg.get("kind") == "mel" else Single(cfg)).to(dev)
    params = sum(p.numel() for p in model.parameters())
    opt_cfg, sch = tr["optimizer"], tr["schedule"]
    assert opt_cfg["type"] == "adam" and sch["type"] == "onecycle", "written for adam + onecycle"
    opt = torch.optim.Adam(model.parameters(), lr=opt_cfg["lr"], weight_decay=opt_cfg.get("weight_decay", 0.0))
    bs = tr["batch_size"]
    steps = math.ceil(len(ytr) / bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=sch["max_lr"], total_steps=epochs * steps, pct_start=sch.get("pct_start", 0.3),
        anneal_strategy=sch.get("anneal", "cos"), div_factor=sch.get("div_factor", 25.0),
        final_div_factor=sch.get("final_div_factor", 1e4))
    gen = torch.Generator().manual_seed(a.seed)
    sa = cfg["data"].get("spec_augment", {})
    weights = model.weights
    print(f"torch {torch.__version__}: {cfg['name']}, {params:,} parameters, {len(ytr)} train / "
          f"{len(yte)} test clips, {epochs} epochs, {torch.get_num_threads()} threads", flush=True)

    def evaluate():
        model.eval()
        correct = [0] * len(model.names)
        with torch.no_grad():
            for i in range(0, len(yte), 512):
                out = model(xte[i:i + 512].to(dev))
                for k, o in enumerate(out):
                    correct[k] += (o.argmax(1).cpu() == yte[i:i + 512]).sum().item()
        return [100.0 * c / len(yte) for c in correct]

    times = []
    for epoch in range(epochs):
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(len(ytr), generator=gen)
        total = 0.0
        for s in range(steps):
            idx = perm[s * bs:(s + 1) * bs]
            x = xtr[idx].clone()
            spec_augment(x, sa, gen)
            x, y = x.to(dev), ytr[idx].to(dev)
            out = model(x)
            loss = sum(w * F.cross_entropy(o, y) for w, o in zip(weights, out))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        times.append(time.perf_counter() - t0)
        acc = evaluate()
        print(f"epoch {epoch + 1}/{epochs}: loss {total / steps:.4f}, {times[-1]:.1f} s, test "
              + ", ".join(f"{n} {v:.2f}%" for n, v in zip(model.names, acc)), flush=True)
    result = {"config": cfg["name"], "framework": f"torch {torch.__version__}", "parameters": params,
              "epochs": epochs, "accuracy": dict(zip(model.names, acc)),
              "seconds_per_epoch": sum(times) / len(times), "threads": torch.get_num_threads()}
    print(json.dumps(result))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
