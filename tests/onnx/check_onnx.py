#!/usr/bin/env python3
"""Checks the ONNX files that tests/onnx/test_onnx_export.cpp wrote against mel's own outputs.

    check_onnx.py DIR

DIR holds one folder per case: upstream_<i>.onnx and combination.onnx, the input x.npy (and, for
a real run, pixels.npy: the u8 images that x is the normalisation of), and mel's outputs
upstream_<i>.exit_logits.npy, upstream_<i>.features.npy and combination.head_<subset>.npy.

Every model must pass onnx.checker.check_model(full_check=True), carry the run in its
metadata_props, and reproduce mel's outputs within 1e-5 (absolute + relative) when run by
onnx_numpy_eval.py; the combination server is run both on mel's features and on the exported
upstream models' features. OpenCV's dnn module (python3-opencv), when importable, runs every model
as a third-party runtime and must agree too, except where a known limitation of OpenCV 4.6 stops
its importer (layernorm's broadcasting, conv1d): that is printed, not failed. Exits 77 (skipped)
without onnx or numpy.
"""
import glob
import json
import os
import sys

SKIP = 77
ATOL = RTOL = 1e-5

try:
    import numpy as np
    import onnx
except ImportError as e:
    print(f"SKIPPED: python3-onnx and python3-numpy are needed ({e})")
    sys.exit(SKIP)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from onnx_numpy_eval import run_model  # noqa: E402

try:
    import cv2
except ImportError as e:
    cv2 = None
    print(f"note: OpenCV's dnn is not used ({e}; install python3-opencv)")

failures = []
current = {"case": ""}  # the case being checked, for messages


def compare(what, got, want):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    what = f"{current['case']}: {what}"
    if got.shape != want.shape:
        failures.append(f"{what}: shape {got.shape}, mel's {want.shape}")
        return
    err = np.abs(got - want)
    bad = err > ATOL + RTOL * np.abs(want)
    print(f"  {what.split(': ', 1)[1]}: max abs diff {err.max():.3g}")
    if bad.any():
        failures.append(f"{what}: {int(bad.sum())} of {bad.size} values differ from mel's by more "
                        f"than {ATOL} + {RTOL} * |value| (max abs diff {err.max():.3g})")


def metadata(model):
    return {p.key: p.value for p in model.metadata_props}


def load(path):
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    meta = metadata(model)
    for key in ("format", "run_name", "config", "server"):
        if key not in meta:
            failures.append(f"{path}: metadata_props lacks {key}")
    json.loads(meta.get("config", "{}"))
    # the batch dimension is symbolic
    for v in list(model.graph.input) + list(model.graph.output):
        if v.type.tensor_type.shape.dim[0].dim_param != "N":
            failures.append(f"{path}: {v.name} has no symbolic batch dimension N")
    return model


def opencv_limitation(model):
    """What OpenCV 4.6's ONNX importer is known not to take in `model` (None: it must run it)."""
    for n in model.graph.node:
        if n.op_type == "ReduceMean":
            return ("layernorm: OpenCV 4.6 cannot broadcast Sub/Div of [N, F] by [N, 1] "
                    "(parseMul asserts 'axis != outShape.size()')")
        if n.op_type == "Conv" and len(n.input) > 1 and any(
                len(a.ints) == 1 for a in n.attribute if a.name == "kernel_shape"):
            return "conv1d: OpenCV 4.6's convolution layer rejects the 3-D input"
    return None


def run_cv2(path, model, feeds, outputs):
    """OpenCV's outputs, or None where a known limitation of OpenCV stops it."""
    known = opencv_limitation(model)
    try:
        net = cv2.dnn.readNetFromONNX(path)
        for name in feeds:
            net.setInput(np.ascontiguousarray(feeds[name], dtype=np.float32), name)
        return dict(zip(outputs, net.forward(outputs)))
    except cv2.error as e:
        if known:
            print(f"  OpenCV does not run {os.path.basename(path)} (known limitation: {known})")
        else:
            failures.append(f"{path}: OpenCV cannot run it: {str(e).strip()}")
        return None


def check_case(case):
    current["case"] = os.path.basename(case)
    print(f"case {current['case']}")
    npy = lambda name: np.load(os.path.join(case, name))  # noqa: E731
    x = npy("x.npy")
    ups = sorted(glob.glob(os.path.join(case, "upstream_*.onnx")),
                 key=lambda p: int(p.rsplit("_", 1)[1].split(".")[0]))
    if not ups:
        failures.append(f"{case}: no upstream_<i>.onnx")
        return
    mel_features, onnx_features = {}, {}
    for path in ups:
        i = int(os.path.basename(path)[len("upstream_"):-len(".onnx")])
        model = load(path)
        meta = metadata(model)
        if meta.get("server") != str(i):
            failures.append(f"{path}: server {meta.get('server')}")
        if [i.name for i in model.graph.input] != ["x"] or \
                [o.name for o in model.graph.output] != ["exit_logits", "features"]:
            failures.append(f"{path}: inputs/outputs are not x -> exit_logits, features")
        xin = x
        if os.path.exists(os.path.join(case, "pixels.npy")):
            # the documented normalisation, from the metadata, gives mel's input
            mean = np.array(json.loads(meta["input_mean"]), dtype=np.float32).astype(np.float64)
            std = np.array(json.loads(meta["input_std"]), dtype=np.float32).astype(np.float64)
            shape = (1, -1) + (1,) * (x.ndim - 2)
            xin = (npy("pixels.npy").astype(np.float64) / 255 - mean.reshape(shape)) / \
                std.reshape(shape)
            compare(f"upstream {i}: x from pixels and input_mean/input_std", xin, x)
        out = run_model(model, {"x": xin})
        want_exit = npy(f"upstream_{i}.exit_logits.npy")
        want_feat = npy(f"upstream_{i}.features.npy")
        compare(f"upstream {i}: exit_logits", out["exit_logits"], want_exit)
        compare(f"upstream {i}: features", out["features"], want_feat)
        mel_features[f"features_{i}"] = want_feat
        onnx_features[f"features_{i}"] = out["features"]
        got = run_cv2(path, model, {"x": x}, ["exit_logits", "features"]) if cv2 else None
        if got is not None:
            compare(f"upstream {i} (OpenCV): exit_logits", got["exit_logits"], want_exit)
            compare(f"upstream {i} (OpenCV): features",
                    got["features"].reshape(want_feat.shape), want_feat)
    path = os.path.join(case, "combination.onnx")
    model = load(path)
    heads = [o.name for o in model.graph.output]
    if [i.name for i in model.graph.input] != [f"features_{k}" for k in range(1, len(ups) + 1)]:
        failures.append(f"{path}: inputs are not features_1..features_{len(ups)}")
    from_mel = run_model(model, mel_features)
    chained = run_model(model, onnx_features)
    got_cv = run_cv2(path, model, mel_features, heads) if cv2 else None
    for h in heads:
        want = npy(f"combination.{h}.npy")
        compare(f"combination: {h}", from_mel[h], want)
        compare(f"combination: {h} from the ONNX upstreams' features", chained[h], want)
        if got_cv is not None:
            compare(f"combination (OpenCV): {h}", got_cv[h], want)
    expected = sorted(os.path.basename(p)[len("combination."):-len(".npy")]
                      for p in glob.glob(os.path.join(case, "combination.head_*.npy")))
    if sorted(heads) != expected:
        failures.append(f"{path}: outputs {heads}, mel has {expected}")


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    root = sys.argv[1]
    if os.path.exists(os.path.join(root, "SKIPPED")):
        with open(os.path.join(root, "SKIPPED")) as f:
            print(f"SKIPPED: {f.read().strip()}")
        return SKIP
    cases = sorted(d for d in glob.glob(os.path.join(root, "*")) if os.path.isdir(d))
    if not cases:
        print(f"{root}: no exported cases (run test_onnx first)")
        return 1
    print(f"onnx {onnx.__version__}, numpy {np.__version__}, "
          f"OpenCV {cv2.__version__ if cv2 is not None else 'not installed'}")
    for case in cases:
        check_case(case)
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print(f"OK: {len(cases)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
