"""A small NumPy evaluator for the ONNX operators `mel export --format onnx` emits.

It follows the ONNX operator specification (opset 13) for exactly these operators: Conv,
BatchNormalization, Relu, Sigmoid, Tanh, Erf, Add, Sub, Mul, Div, Sqrt, ReduceMean, MaxPool,
AveragePool, GlobalAveragePool, Flatten, Gemm, MatMul, Reshape, Concat and Identity. It computes in
float64 (a reference, not a runtime) and refuses anything else: an unknown operator or attribute
value is an error, never a guess.

    outputs = run_model(onnx.load(path), {"x": x})   # {output name: array}
"""
import itertools
import math

import numpy as np
from onnx import numpy_helper


def _attrs(node):
    out = {}
    for a in node.attribute:
        if a.type == a.INT:
            out[a.name] = a.i
        elif a.type == a.INTS:
            out[a.name] = list(a.ints)
        elif a.type == a.FLOAT:
            out[a.name] = a.f
        elif a.type == a.FLOATS:
            out[a.name] = list(a.floats)
        elif a.type == a.STRING:
            out[a.name] = a.s.decode()
        else:
            raise NotImplementedError(f"{node.op_type}: attribute {a.name} of type {a.type}")
    return out


def _check_auto_pad(op, at):
    if at.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise NotImplementedError(f"{op}: auto_pad {at['auto_pad']}")


def _window_geometry(op, x, at, kernel):
    """Spatial sizes, strides, dilations, begin/end pads and output sizes of a conv or pool."""
    _check_auto_pad(op, at)
    nd = len(kernel)
    spatial = x.shape[2:]
    if len(spatial) != nd:
        raise ValueError(f"{op}: input {x.shape} for a {nd}-d kernel")
    strides = at.get("strides", [1] * nd)
    dil = at.get("dilations", [1] * nd)
    pads = at.get("pads", [0] * (2 * nd))
    if at.get("auto_pad", "NOTSET") == "VALID":
        pads = [0] * (2 * nd)
    ceil_mode = at.get("ceil_mode", 0)
    out = []
    for i in range(nd):
        span = (kernel[i] - 1) * dil[i] + 1
        num = spatial[i] + pads[i] + pads[i + nd] - span
        o = (-(-num // strides[i]) if ceil_mode else num // strides[i]) + 1
        if ceil_mode and (o - 1) * strides[i] >= spatial[i] + pads[i]:
            o -= 1  # the last window must start inside the input or its begin padding
        out.append(o)
    return strides, dil, pads, out


def _windows(xp, kernel, strides, dil, out):
    """Yields, for every kernel offset, the strided view of the padded input it touches."""
    for k in itertools.product(*[range(n) for n in kernel]):
        sl = [slice(None), slice(None)]
        for i, ki in enumerate(k):
            start = ki * dil[i]
            sl.append(slice(start, start + strides[i] * (out[i] - 1) + 1, strides[i]))
        yield k, xp[tuple(sl)]


def _pad(x, pads, out, kernel, strides, dil, value):
    """Pads begins and ends (and the extra end that ceil_mode windows reach)."""
    nd = len(kernel)
    width = [(0, 0), (0, 0)]
    for i in range(nd):
        need = strides[i] * (out[i] - 1) + (kernel[i] - 1) * dil[i] + 1
        end = max(pads[i + nd], need - x.shape[2 + i] - pads[i])
        width.append((pads[i], end))
    return np.pad(x, width, constant_values=value)


def conv(x, w, b, at):
    kernel = at.get("kernel_shape", list(w.shape[2:]))
    group = at.get("group", 1)
    strides, dil, pads, out = _window_geometry("Conv", x, at, kernel)
    n, c = x.shape[:2]
    m = w.shape[0]
    if c % group or m % group or w.shape[1] != c // group:
        raise ValueError(f"Conv: input {x.shape}, weight {w.shape}, group {group}")
    xp = _pad(x, pads, out, kernel, strides, dil, 0.0)
    y = np.zeros((n, m, *out))
    cg, mg = c // group, m // group
    for k, xs in _windows(xp, kernel, strides, dil, out):
        wk = w[(slice(None), slice(None), *k)]  # [M, C/group]
        for g in range(group):
            y[:, g * mg:(g + 1) * mg] += np.einsum(
                "nc...,mc->nm...", xs[:, g * cg:(g + 1) * cg], wk[g * mg:(g + 1) * mg])
    if b is not None:
        y += b.reshape(1, m, *([1] * len(out)))
    return y


def max_pool(x, at):
    kernel = at["kernel_shape"]
    if at.get("storage_order", 0):
        raise NotImplementedError("MaxPool: storage_order 1")
    strides, dil, pads, out = _window_geometry("MaxPool", x, at, kernel)
    xp = _pad(x, pads, out, kernel, strides, dil, -np.inf)
    y = np.full((*x.shape[:2], *out), -np.inf)
    for _, xs in _windows(xp, kernel, strides, dil, out):
        y = np.maximum(y, xs)
    return y


def average_pool(x, at):
    kernel = at["kernel_shape"]
    strides, dil, pads, out = _window_geometry("AveragePool", x, at, kernel)
    nd = len(kernel)
    # Which cells count: the input always; the `pads` zeros with count_include_pad; never the
    # extra cells that ceil_mode windows reach past the end padding.
    inside = np.ones((1, 1, *x.shape[2:]))
    counted = _pad(inside, pads, out, kernel, strides, dil, 0.0)
    if at.get("count_include_pad", 0):
        region = tuple([slice(None)] * 2 + [slice(0, x.shape[2 + i] + pads[i] + pads[i + nd])
                                            for i in range(nd)])
        counted[region] = 1.0
    xp = _pad(x, pads, out, kernel, strides, dil, 0.0)
    total = np.zeros((*x.shape[:2], *out))
    count = np.zeros((1, 1, *out))
    for (_, xs), (_, cs) in zip(_windows(xp, kernel, strides, dil, out),
                                _windows(counted, kernel, strides, dil, out)):
        total += xs
        count += cs
    return total / count


def batch_norm(x, scale, bias, mean, var, at):
    if at.get("training_mode", 0):
        raise NotImplementedError("BatchNormalization: training_mode 1")
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    eps = at.get("epsilon", 1e-5)
    return ((x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * scale.reshape(shape)
            + bias.reshape(shape))


def gemm(a, b, c, at):
    if at.get("transA", 0):
        a = a.T
    if at.get("transB", 0):
        b = b.T
    y = at.get("alpha", 1.0) * (a @ b)
    if c is not None:
        y = y + at.get("beta", 1.0) * c
    return y


def reshape(x, shape, at):
    shape = [int(s) for s in shape]
    if not at.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def flatten(x, at):
    axis = at.get("axis", 1)
    if axis < 0:
        axis += x.ndim
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)


def reduce_mean(x, axes, at):
    if axes is None:
        axes = at.get("axes")
    axes = tuple(range(x.ndim)) if axes is None or len(axes) == 0 else tuple(int(a) for a in axes)
    return x.mean(axis=axes, keepdims=bool(at.get("keepdims", 1)))


_erf = np.vectorize(math.erf, otypes=[np.float64])


def _op(op, ins, at):
    def opt(i):
        return ins[i] if len(ins) > i and ins[i] is not None else None

    unary = {"Relu": lambda v: np.maximum(v, 0.0), "Sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
             "Tanh": np.tanh, "Erf": _erf, "Sqrt": np.sqrt, "Identity": lambda v: v.copy()}
    binary = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide,
              "MatMul": np.matmul}
    if op in unary:
        return unary[op](ins[0])
    if op in binary:
        return binary[op](ins[0], ins[1])
    if op == "Conv":
        return conv(ins[0], ins[1], opt(2), at)
    if op == "BatchNormalization":
        return batch_norm(*ins[:5], at)
    if op == "MaxPool":
        return max_pool(ins[0], at)
    if op == "AveragePool":
        return average_pool(ins[0], at)
    if op == "GlobalAveragePool":
        return ins[0].mean(axis=tuple(range(2, ins[0].ndim)), keepdims=True)
    if op == "Flatten":
        return flatten(ins[0], at)
    if op == "Gemm":
        return gemm(ins[0], ins[1], opt(2), at)
    if op == "Reshape":
        return reshape(ins[0], ins[1], at)
    if op == "Concat":
        return np.concatenate(ins, axis=at["axis"])
    if op == "ReduceMean":
        return reduce_mean(ins[0], opt(1), at)
    raise NotImplementedError(f"operator {op} is not in this evaluator")


def run_model(model, feeds):
    """Runs the graph of `model` (an onnx.ModelProto) on `feeds`; returns its outputs."""
    for imp in model.opset_import:
        if imp.domain not in ("", "ai.onnx") or imp.version > 17:
            raise NotImplementedError(f"opset {imp.domain or 'ai.onnx'} {imp.version}")
    g = model.graph
    env = {t.name: numpy_helper.to_array(t).astype(np.float64)
           if numpy_helper.to_array(t).dtype.kind == "f" else numpy_helper.to_array(t)
           for t in g.initializer}
    for i in g.input:
        if i.name in env:
            continue
        if i.name not in feeds:
            raise KeyError(f"missing input {i.name}")
        env[i.name] = np.asarray(feeds[i.name], dtype=np.float64)
    for node in g.node:
        ins = [env[n] if n else None for n in node.input]
        y = _op(node.op_type, ins, _attrs(node))
        if len(node.output) != 1:
            raise NotImplementedError(f"{node.op_type} with {len(node.output)} outputs")
        env[node.output[0]] = y
    return {o.name: env[o.name] for o in g.output}
