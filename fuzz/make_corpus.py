#!/usr/bin/env python3
"""Writes the seed corpora fuzz/corpus/<target>/ (small valid inputs, a few KB per target).

Run from anywhere: python3 fuzz/make_corpus.py. The output is deterministic (gzip mtime 0), and
the files are committed; rerun it after changing a seed here. Standard library only.
"""
import gzip
import json
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def gz(data):
    return gzip.compress(data, compresslevel=9, mtime=0)


# ---- config: the reference configs, compacted, descriptions dropped, channels divided by 8 ----
def shrink(value):
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in ("description", "original"):
                continue
            if k in ("out", "hidden") and isinstance(v, int) and v > 20:
                v = max(2, v // 8)
            out[k] = shrink(v)
        return out
    if isinstance(value, list):
        return [shrink(v) for v in value]
    return value


def config_seeds():
    for src, name in [("fmnist_original.json", "single_fmnist.json"),
                      ("fmnist_mel2.json", "mel2_fmnist.json"),
                      ("fmnist_mel2_independent.json", "mel2_independent.json"),
                      ("cifar100_mel3_hierarchical.json", "mel3_cifar100_hierarchical.json")]:
        with open(os.path.join(ROOT, "configs", src)) as f:
            cfg = shrink(json.load(f))
        write("config", name, json.dumps(cfg, separators=(",", ":")))
    # Every other built-in layer type, on a 1-D and a 2-D input.
    seq = {
        "name": "layers_1d",
        "data": {"dataset": "fashion-mnist"},
        "model": {
            "input": [3, 16],
            "trunk": [
                {"type": "conv1d", "out": 4, "kernel": 3, "stride": 2, "padding": 1},
                {"type": "batchnorm1d", "eps": 1e-5, "momentum": 0.1},
                {"type": "gelu"},
                {"type": "flatten"},
                {"type": "layernorm"},
                {"type": "dropout", "p": 0.25},
                {"type": "identity"},
            ],
            "head": [{"type": "linear", "out": 10, "bias": True}],
        },
        "train": {"epochs": 1, "batch_size": 4, "optimizer": {"type": "sgd", "lr": 0.1,
                                                              "momentum": 0.9}},
    }
    write("config", "layers_1d.json", json.dumps(seq, separators=(",", ":")))
    img = {
        "name": "layers_2d",
        "data": {"dataset": "cifar10", "crop_padding": 2, "hflip": True},
        "model": {
            "input": [3, 12, 12],
            "trunk": [
                {"type": "conv2d", "out": 6, "kernel": [3, 1], "padding": [1, 0], "groups": 3,
                 "dilation": 1},
                {"type": "avgpool2d", "kernel": 2, "count_include_pad": False},
                {"type": "tanh"},
                {"type": "adaptive_avg_pool2d", "size": 2},
                {"type": "batchnorm2d", "affine": False},
                {"type": "flatten"},
            ],
            "head": [{"type": "linear", "out": 10}],
        },
        "train": {"epochs": 2, "label_smoothing": 0.1,
                  "optimizer": {"type": "adamw", "lr": 0.001, "betas": [0.9, 0.99]},
                  "schedule": {"type": "step", "step_epochs": 1}},
    }
    write("config", "layers_2d.json", json.dumps(img, separators=(",", ":")))


# ---- safetensors ---------------------------------------------------------------------------------
def safetensors(tensors, metadata=None):
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def safetensors_seeds():
    write("safetensors", "two_tensors.safetensors", safetensors(
        [("w", "F32", [2, 2], struct.pack("<4f", 1, -2, 0.5, 3)),
         ("b", "U8", [3], bytes([1, 2, 3]))], {"format": "mel", "epoch": "1"}))
    write("safetensors", "dtypes.safetensors", safetensors(
        [("h", "F16", [2], struct.pack("<2e", 1.5, -0.25)),
         ("bf", "BF16", [1], b"\x80\x3f"),
         ("d", "F64", [1], struct.pack("<d", 2.0)),
         ("i", "I32", [2], struct.pack("<2i", -1, 7)),
         ("l", "I64", [1, 1], struct.pack("<q", 42)),
         ("empty", "F32", [0, 4], b""),
         ("scalar", "F32", [], struct.pack("<f", 9.0))]))
    write("safetensors", "empty.safetensors", safetensors([]))


# ---- IDX, plain and gzip -------------------------------------------------------------------------
def idx(dims, data):
    return struct.pack(">BBBB", 0, 0, 8, len(dims)) + b"".join(struct.pack(">I", d) for d in dims) + data


def idx_seeds():
    labels = idx([10], bytes(range(10)))
    images = idx([2, 4, 4], bytes((i * 7) % 256 for i in range(32)))
    write("idx", "labels-idx1-ubyte", labels)
    write("idx", "images-idx3-ubyte", images)
    write("idx", "labels-idx1-ubyte.gz", gz(labels))
    write("idx", "images-idx3-ubyte.gz", gz(images))
    write("idx", "two-members.gz", gz(images[:20]) + gz(images[20:]))


# ---- CIFAR: first byte 0 = CIFAR-10 (3073-byte records), 1 = CIFAR-100 (3074) ------------------
def cifar_seeds():
    pixels = bytes((i * 13) % 256 for i in range(3072))
    write("cifar", "cifar10_one_record", b"\x00" + bytes([7]) + pixels)
    write("cifar", "cifar100_one_record", b"\x01" + bytes([19, 99]) + pixels)


# ---- .npy -----------------------------------------------------------------------------------------
def npy(descr, shape, data, version=1):
    dims = ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "")
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (descr, dims)
    prefix = 10 if version == 1 else 12
    header += " " * ((64 - (prefix + len(header) + 1) % 64) % 64) + "\n"
    length = struct.pack("<H", len(header)) if version == 1 else struct.pack("<I", len(header))
    return b"\x93NUMPY" + bytes([version, 0]) + length + header.encode() + data


def npy_seeds():
    write("npy", "f32_2x3.npy", npy("<f4", [2, 3], struct.pack("<6f", *range(6))))
    write("npy", "u8_4.npy", npy("|u1", [4], bytes([0, 1, 254, 255])))
    write("npy", "i64_scalar.npy", npy("<i8", [], struct.pack("<q", -5)))
    write("npy", "f64_empty.npy", npy("<f8", [0, 3], b""))
    write("npy", "i32_v2.npy", npy("<i4", [2, 1, 1], struct.pack("<2i", 3, -3), version=2))


# ---- serving: frames separated by "\n@@FRAME\n" (fuzz/targets/serving.cpp) -----------------------
SEP = b"\n@@FRAME\n"


def message(header, frames=()):
    return SEP.join([json.dumps(header, separators=(",", ":")).encode()] + list(frames))


def serving_seeds():
    write("serving", "hello", message({"type": "hello", "id": 0, "tensors": []}))
    write("serving", "features", message(
        {"type": "features", "id": 7, "alive": [0, 1],
         "tensors": [{"name": "f0", "dtype": "f32", "shape": [1, 2]},
                     {"name": "f1", "dtype": "f32", "shape": [1, 2]}]},
        [struct.pack("<2f", 1, 2), struct.pack("<2f", -1, 0.5)]))
    write("serving", "predict", message(
        {"type": "predict", "id": "req-1",
         "tensors": [{"name": "input", "dtype": "u8", "shape": [1, 1, 2, 2]},
                     {"name": "labels", "dtype": "i64", "shape": [1]}]},
        [bytes([0, 64, 128, 255]), struct.pack("<q", 3)]))
    write("serving", "control", message({"type": "control", "id": 1, "fault": "delay", "ms": 5}))


# ---- wav: audio files as libsndfile reads them (data/audio read_audio_memory) -----------------
def wav(fmt_tag, channels, rate, bits, data, extensible=False, fact=False):
    block = channels * bits // 8
    if extensible:  # WAVE_FORMAT_EXTENSIBLE: cbSize 22, valid bits, channel mask, sub-format GUID
        guid = struct.pack("<I", fmt_tag) + bytes.fromhex("000010008000" "00aa00389b71")
        fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * block, block, bits, 22, bits,
                          (1 << channels) - 1) + guid
    else:
        fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    if fact:
        body += b"fact" + struct.pack("<II", 4, len(data) // block)
    body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def wav_seeds():
    wave16 = [int(12000 * ((i * 7) % 16 - 8) / 8) for i in range(16)]
    pcm16 = wav(1, 1, 16000, 16, struct.pack("<16h", *wave16))
    write("wav", "pcm16_mono_16k.wav", pcm16)
    write("wav", "pcm8_mono_8k.wav", wav(1, 1, 8000, 8, bytes((i * 37) % 256 for i in range(16))))
    pcm24 = b"".join(struct.pack("<i", v * 256)[:3] for v in wave16)
    write("wav", "pcm24_stereo_22k.wav", wav(1, 2, 22050, 24, pcm24))
    write("wav", "float_mono_16k.wav",
          wav(3, 1, 16000, 32, struct.pack("<8f", 0, 0.5, -0.5, 1, -1, 0.25, 2.0, -0.125), fact=True))
    write("wav", "extensible_pcm16_stereo.wav",
          wav(1, 2, 48000, 16, struct.pack("<8h", *wave16[:8]), extensible=True))
    # Sun/NeXT .au: big-endian 16-bit linear PCM
    au = b".snd" + struct.pack(">IIIII", 24, 16, 3, 8000, 1) + struct.pack(">8h", *wave16[:8])
    write("wav", "pcm16_mono_8k.au", au)
    write("wav", "truncated.wav", pcm16[: len(pcm16) - 10])  # data chunk 10 bytes short
    write("wav", "header_only.wav", pcm16[:44])
    write("wav", "garbage.bin", bytes((i * 91 + 7) % 256 for i in range(64)))


# ---- text: fortune-style corpus files, documents between lines "%" (data/text) ------------------
def text_seeds():
    write("text", "fortunes.txt",
          "A day for firm decisions!!!!!  Or is it?\n%\n"
          "Q:\tWhat's the difference?\nA:\tOne letter.\n\t\t-- Anonymous\n%\n"
          "%DCL-MEM-BAD, bad memory\n%\n")
    write("text", "utf8.txt",
          "caf\u00e9 \u00fcber na\u00efve \u20ac5\n%\n\u65e5\u672c\u8a9e \U0001d11e \U0001f600\n"
          "\u0080 C1 mojibake \u00c3\u00a9\n")
    write("text", "empty_documents.txt", "%\n\n%\n \t\n%\nonly this one\n%\n%\n")
    write("text", "no_final_newline.txt", "first\n%\nlast line without newline")
    write("text", "overstrike.txt", "____\b\b\b\bBODY! and a bell \a\n%\nx\r\ny\n")
    write("text", "vocabulary.txt", "\t\n !\"#$%&'()*+,-./0123456789:;<=>?@ABCxyz\u00e9\u20ac")
    write("text", "crlf_separator.txt", b"one\r\n%\r\ntwo\r\n")
    write("text", "latin1.txt", b"caf\xe9\n%\nna\xefve\n")
    write("text", "overlong_surrogate.txt", b"ok\n%\n\xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80\n")
    write("text", "nul.txt", b"a\x00b\n")


if __name__ == "__main__":
    config_seeds()
    safetensors_seeds()
    idx_seeds()
    cifar_seeds()
    npy_seeds()
    serving_seeds()
    wav_seeds()
    text_seeds()
    for t in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, t))
        size = sum(os.path.getsize(os.path.join(CORPUS, t, f)) for f in files)
        print(f"{t}: {len(files)} seeds, {size} bytes")
