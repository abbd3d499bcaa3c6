#!/usr/bin/env python3
"""An independent numpy implementation of the zoo's networks, used as an
oracle for shufflekit's reference evaluator (tests/oracle.rs).

It shares nothing with the Rust code but the tensor names: the
architectures are written here from their published descriptions

- ShuffleNet v1: Zhang et al., arXiv 1707.01083, Table 1 and Fig. 2, as
  summarised in shared/reference/shufflenet-v1.md (channel rounding of the
  width multiplier: stages to a multiple of 4*g, Conv1 to a multiple of g);
- ShuffleNet v2: torchvision.models.shufflenet_v2_x*_* (InvertedResidual);
- MobileNet v1: Howard et al., arXiv 1704.04861, Table 1 (ReLU, channels
  max(floor(c * width), 8));

and computed in float64. Weights are read from a safetensors file parsed
by hand (8-byte little-endian header length, JSON header, raw data); every
tensor in the file must be used, with the shape the architecture implies.

Usage:
  numpy_reference.py MODEL --weights W.safetensors --input X.npy --output Y.npy
      [--groups G] [--width S] [--classes K]
MODEL is shufflenet_v1, shufflenet_v2 or mobilenet_v1. X is [N, 3, H, W];
Y gets the logits [N, K] as float64.
"""

import argparse
import json
import math
import struct
import sys

import numpy as np

BN_EPS = 1e-5


class WeightFile:
    """A safetensors file: tensors by name, with a record of which were used."""

    def __init__(self, path):
        with open(path, "rb") as f:
            raw = f.read()
        if len(raw) < 8:
            raise ValueError(f"{path}: too short for a safetensors file")
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + n].decode("utf-8"))
        data = raw[8 + n :]
        self.tensors = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if info["dtype"] != "F32":
                raise ValueError(f"{name}: dtype {info['dtype']}, expected F32")
            start, end = info["data_offsets"]
            shape = tuple(info["shape"])
            array = np.frombuffer(data[start:end], dtype="<f4")
            if array.size != math.prod(shape):
                raise ValueError(f"{name}: {array.size} values for shape {shape}")
            self.tensors[name] = array.reshape(shape).astype(np.float64)
        self.used = set()

    def get(self, name, shape):
        if name not in self.tensors:
            raise KeyError(f"missing tensor {name} (expected shape {shape})")
        t = self.tensors[name]
        if t.shape != tuple(shape):
            raise ValueError(f"tensor {name} has shape {t.shape}, expected {tuple(shape)}")
        self.used.add(name)
        return t

    def check_all_used(self):
        unused = sorted(set(self.tensors) - self.used)
        if unused:
            raise ValueError(f"tensors not used by the architecture: {unused[:10]}")


# ---------------------------------------------------------------- operations


def conv2d(x, w, stride=1, padding=0, groups=1):
    """NCHW cross-correlation with zero padding and channel groups."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    assert c == cg * groups and o % groups == 0
    og = o // groups
    oh = (h + 2 * padding - kh) // stride + 1
    ow = (wd + 2 * padding - kw) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    xg = xp.reshape(n, groups, cg, h + 2 * padding, wd + 2 * padding)
    wg = w.reshape(groups, og, cg, kh, kw)
    out = np.zeros((n, groups, og, oh, ow))
    for ky in range(kh):
        for kx in range(kw):
            patch = xg[:, :, :, ky : ky + stride * (oh - 1) + 1 : stride, kx : kx + stride * (ow - 1) + 1 : stride]
            out += np.einsum("ngchw,goc->ngohw", patch, wg[:, :, :, ky, kx])
    return out.reshape(n, o, oh, ow)


def batch_norm(x, wf, name):
    c = x.shape[1]
    gamma = wf.get(f"{name}.weight", (c,))
    beta = wf.get(f"{name}.bias", (c,))
    mean = wf.get(f"{name}.running_mean", (c,))
    var = wf.get(f"{name}.running_var", (c,))
    scale = gamma / np.sqrt(var + BN_EPS)
    return (x - mean[None, :, None, None]) * scale[None, :, None, None] + beta[None, :, None, None]


def relu(x):
    return np.maximum(x, 0.0)


def pool_windows(x, k, stride, padding, fill):
    n, c, h, w = x.shape
    oh = (h + 2 * padding - k) // stride + 1
    ow = (w + 2 * padding - k) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=fill)
    return [
        xp[:, :, ky : ky + stride * (oh - 1) + 1 : stride, kx : kx + stride * (ow - 1) + 1 : stride]
        for ky in range(k)
        for kx in range(k)
    ]


def max_pool(x, k, stride, padding):
    return np.max(np.stack(pool_windows(x, k, stride, padding, -np.inf)), axis=0)


def avg_pool(x, k, stride, padding):
    """count_include_pad=True (PyTorch's default): divide by k*k."""
    return np.sum(np.stack(pool_windows(x, k, stride, padding, 0.0)), axis=0) / (k * k)


def channel_shuffle(x, groups):
    """View channels as (groups, n), transpose to (n, groups), flatten."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(0, 2, 1, 3, 4).reshape(n, c, h, w)


def conv(x, wf, name, out, k, stride=1, padding=0, groups=1):
    w = wf.get(f"{name}.weight", (out, x.shape[1] // groups, k, k))
    return conv2d(x, w, stride, padding, groups)


def classifier(x, wf, classes):
    x = x.mean(axis=(2, 3))
    w = wf.get("fc.weight", (classes, x.shape[1]))
    b = wf.get("fc.bias", (classes,))
    return x @ w.T + b


def stem(x, wf, out):
    x = conv(x, wf, "conv1", out, 3, stride=2, padding=1)
    x = relu(batch_norm(x, wf, "bn1"))
    return x


# ---------------------------------------------------------------- networks


def round_up(v, m):
    return int(math.ceil(v / m) * m)


def shufflenet_v1(x, wf, groups, width, classes):
    stage2 = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}[groups]
    c2 = round_up(stage2 * width, 4 * groups)
    c1 = round_up(24 * width, groups)
    x = stem(x, wf, c1)
    x = max_pool(x, 3, 2, 1)
    for stage, (out, units) in enumerate([(c2, 4), (2 * c2, 8), (4 * c2, 4)], start=2):
        for u in range(1, units + 1):
            p = f"stage{stage}.unit{u}"
            stride = 2 if u == 1 else 1
            first_groups = 1 if (stage == 2 and u == 1) else groups
            cin = x.shape[1]
            mid = out // 4
            y = conv(x, wf, f"{p}.gconv1", mid, 1, groups=first_groups)
            y = relu(batch_norm(y, wf, f"{p}.bn1"))
            if groups > 1:
                y = channel_shuffle(y, groups)
            y = conv(y, wf, f"{p}.dwconv", mid, 3, stride=stride, padding=1, groups=mid)
            y = batch_norm(y, wf, f"{p}.bn2")
            branch_out = out if stride == 1 else out - cin
            y = conv(y, wf, f"{p}.gconv2", branch_out, 1, groups=groups)
            y = batch_norm(y, wf, f"{p}.bn3")
            if stride == 1:
                x = relu(x + y)
            else:
                x = relu(np.concatenate([avg_pool(x, 3, 2, 1), y], axis=1))
    return classifier(x, wf, classes)


def shufflenet_v2(x, wf, width, classes):
    widths = {0.5: [48, 96, 192, 1024], 1.0: [116, 232, 464, 1024], 1.5: [176, 352, 704, 1024], 2.0: [244, 488, 976, 2048]}[width]
    x = stem(x, wf, 24)
    x = max_pool(x, 3, 2, 1)
    for stage, (out, units) in enumerate(zip(widths[:3], [4, 8, 4]), start=2):
        for u in range(1, units + 1):
            p = f"stage{stage}.unit{u}"
            half = out // 2
            if u == 1:
                cin = x.shape[1]
                b1 = conv(x, wf, f"{p}.branch1.dwconv", cin, 3, stride=2, padding=1, groups=cin)
                b1 = batch_norm(b1, wf, f"{p}.branch1.bn1")
                b1 = conv(b1, wf, f"{p}.branch1.pwconv", half, 1)
                b1 = relu(batch_norm(b1, wf, f"{p}.branch1.bn2"))
                left, right, stride = b1, x, 2
            else:
                c = x.shape[1] // 2
                left, right, stride = x[:, :c], x[:, c:], 1
            b2 = conv(right, wf, f"{p}.branch2.pwconv1", half, 1)
            b2 = relu(batch_norm(b2, wf, f"{p}.branch2.bn1"))
            b2 = conv(b2, wf, f"{p}.branch2.dwconv", half, 3, stride=stride, padding=1, groups=half)
            b2 = batch_norm(b2, wf, f"{p}.branch2.bn2")
            b2 = conv(b2, wf, f"{p}.branch2.pwconv2", half, 1)
            b2 = relu(batch_norm(b2, wf, f"{p}.branch2.bn3"))
            x = channel_shuffle(np.concatenate([left, b2], axis=1), 2)
    x = conv(x, wf, "conv5", widths[3], 1)
    x = relu(batch_norm(x, wf, "bn5"))
    return classifier(x, wf, classes)


def mobilenet_v1(x, wf, width, classes):
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]
    ch = lambda c: max(int(math.floor(c * width)), 8)  # noqa: E731
    x = stem(x, wf, ch(32))
    for i, (out, stride) in enumerate(plan, start=1):
        p = f"dw{i}"
        cin = x.shape[1]
        x = conv(x, wf, f"{p}.dwconv", cin, 3, stride=stride, padding=1, groups=cin)
        x = relu(batch_norm(x, wf, f"{p}.bn1"))
        x = conv(x, wf, f"{p}.pwconv", ch(out), 1)
        x = relu(batch_norm(x, wf, f"{p}.bn2"))
    return classifier(x, wf, classes)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=["shufflenet_v1", "shufflenet_v2", "mobilenet_v1"])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--groups", type=int, default=3)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--classes", type=int, default=1000)
    args = ap.parse_args()

    wf = WeightFile(args.weights)
    x = np.load(args.input).astype(np.float64)
    if args.model == "shufflenet_v1":
        y = shufflenet_v1(x, wf, args.groups, args.width, args.classes)
    elif args.model == "shufflenet_v2":
        y = shufflenet_v2(x, wf, args.width, args.classes)
    else:
        y = mobilenet_v1(x, wf, args.width, args.classes)
    wf.check_all_used()
    np.save(args.output, y)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (KeyError, ValueError, AssertionError) as e:
        print(f"numpy_reference.py: {e}", file=sys.stderr)
        sys.exit(1)
