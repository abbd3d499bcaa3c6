"""Builds a ShuffleNet v2 ONNX model with onnx.helper, independently of
shufflekit, laid out the way `torch.onnx.export` writes torchvision's
`shufflenet_v2_x1_0` (opset 17): node names like
`/stage2/stage2.1/branch2/branch2.0/Conv`, value names `..._output_0`,
initializers named after the PyTorch parameters (`stage2.1.branch2.1.weight`),
`chunk` as `Split` with a constant `split` input, the channel shuffle as
Reshape-Transpose-Reshape with shapes from `Constant` nodes, and a
GlobalAveragePool-Flatten-Gemm head.

    python3 make_shufflenet_v2.py OUT.onnx [--width 1.0] [--resolution 64]
        [--classes 10] [--seed 0] [--fold-bn] [--mean-head]

`--fold-bn` folds each batch norm into its convolution (Conv with a bias,
as PyTorch's eval-mode export does); `--mean-head` writes torchvision's
`x.mean([2, 3])` as ReduceMean(axes=[2, 3], keepdims=0) instead of
GlobalAveragePool-Flatten. Weights are random (He-normal convolutions,
random batch-norm statistics), from `--seed`.
"""
import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WIDTHS = {0.5: [48, 96, 192, 1024], 1.0: [116, 232, 464, 1024],
          1.5: [176, 352, 704, 1024], 2.0: [244, 488, 976, 2048]}


class Builder:
    def __init__(self, seed, fold_bn):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.fold_bn = fold_bn
        self.counts = {}

    def node(self, scope, op, inputs, attrs=None, outputs=1):
        base = f"{scope}/{op}"
        k = self.counts.get(base, 0)
        self.counts[base] = k + 1
        name = base if k == 0 else f"{base}_{k}"
        outs = [f"{name}_output_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **(attrs or {})))
        return outs[0] if outputs == 1 else outs

    def init(self, name, array):
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def constant(self, scope, values):
        base = f"{scope}/Constant"
        k = self.counts.get(base, 0)
        self.counts[base] = k + 1
        name = base if k == 0 else f"{base}_{k}"
        out = f"{name}_output_0"
        tensor = numpy_helper.from_array(np.asarray(values, dtype=np.int64), out)
        self.nodes.append(helper.make_node("Constant", [], [out], name=name, value=tensor))
        return out

    def conv_bn(self, x, scope, param, cin, cout, k, stride, groups, relu, bn_scope, bn_param):
        """Conv (no bias) + BatchNormalization (+ Relu), PyTorch names."""
        fan_in = cin // groups * k * k
        w = self.rng.normal(0, np.sqrt(2.0 / fan_in), (cout, cin // groups, k, k)).astype(np.float32)
        gamma = self.rng.uniform(0.5, 1.5, cout).astype(np.float32)
        beta = self.rng.uniform(-0.2, 0.2, cout).astype(np.float32)
        mean = self.rng.uniform(-0.2, 0.2, cout).astype(np.float32)
        var = self.rng.uniform(0.5, 2.0, cout).astype(np.float32)
        attrs = dict(dilations=[1, 1], group=groups, kernel_shape=[k, k],
                     pads=[k // 2] * 4, strides=[stride, stride])
        if self.fold_bn:
            scale = gamma / np.sqrt(var + 1e-5)
            wf = (w * scale[:, None, None, None]).astype(np.float32)
            bf = (beta - mean * scale).astype(np.float32)
            wn = self.init(f"onnx::Conv_{len(self.inits)}", wf)
            bn = self.init(f"onnx::Conv_{len(self.inits)}", bf)
            y = self.node(scope, "Conv", [x, wn, bn], attrs)
        else:
            y = self.node(scope, "Conv", [x, self.init(f"{param}.weight", w)], attrs)
            y = self.node(bn_scope, "BatchNormalization", [
                y, self.init(f"{bn_param}.weight", gamma), self.init(f"{bn_param}.bias", beta),
                self.init(f"{bn_param}.running_mean", mean), self.init(f"{bn_param}.running_var", var)],
                dict(epsilon=1e-5, momentum=0.9))
        return y

    def relu(self, x, scope):
        return self.node(scope, "Relu", [x])


def seq(b, x, scope, layers):
    """A torch.nn.Sequential of (kind, args) entries named scope.0, scope.1..."""
    prefix = scope.strip("/").split("/")[-1]
    i = 0
    while i < len(layers):
        kind, args = layers[i]
        if kind == "conv":
            cin, cout, k, s, g = args
            relu = i + 2 < len(layers) and layers[i + 2][0] == "relu"
            x = b.conv_bn(x, f"{scope}/{prefix}.{i}", f"{prefix_param(scope)}.{i}", cin, cout, k, s, g,
                          relu, f"{scope}/{prefix}.{i + 1}", f"{prefix_param(scope)}.{i + 1}")
            i += 2
        elif kind == "relu":
            x = b.relu(x, f"{scope}/{prefix}.{i}")
            i += 1
    return x


def prefix_param(scope):
    # "/stage2/stage2.0/branch2" -> "stage2.0.branch2"
    parts = scope.strip("/").split("/")
    out = [parts[0]]
    for part in parts[1:]:
        out.append(part.split(".")[-1] if "." in part else part)
    return ".".join(out)


def unit(b, x, scope, cin, cout, stride):
    bf = cout // 2
    if stride > 1:
        left = seq(b, x, f"{scope}/branch1", [
            ("conv", (cin, cin, 3, stride, cin)), ("bn", None),
            ("conv", (cin, bf, 1, 1, 1)), ("bn", None), ("relu", None)])
        right_in = x
        right_cin = cin
    else:
        left, right_in = b.node(scope, "Split", [x, b.init(f"{scope}/split", np.array([bf, bf], np.int64))],
                                dict(axis=1), outputs=2)
        right_cin = bf
    right = seq(b, right_in, f"{scope}/branch2", [
        ("conv", (right_cin, bf, 1, 1, 1)), ("bn", None), ("relu", None),
        ("conv", (bf, bf, 3, stride, bf)), ("bn", None),
        ("conv", (bf, bf, 1, 1, 1)), ("bn", None), ("relu", None)])
    y = b.node(scope, "Concat", [left, right], dict(axis=1))
    return y


def shuffle(b, x, scope, channels, size):
    s1 = b.constant(scope, [-1, 2, channels // 2, size, size])
    y = b.node(scope, "Reshape", [x, s1], dict(allowzero=0))
    y = b.node(scope, "Transpose", [y], dict(perm=[0, 2, 1, 3, 4]))
    s2 = b.constant(scope, [-1, channels, size, size])
    return b.node(scope, "Reshape", [y, s2], dict(allowzero=0))


def build(width, resolution, classes, seed, fold_bn, mean_head):
    b = Builder(seed, fold_bn)
    widths = WIDTHS[width]
    x = "input"
    x = b.conv_bn(x, "/conv1/conv1.0", "conv1.0", 3, 24, 3, 2, 1, True, "/conv1/conv1.1", "conv1.1")
    x = b.relu(x, "/conv1/conv1.2")
    size = (resolution + 1) // 2
    x = b.node("/maxpool", "MaxPool", [x], dict(ceil_mode=0, kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]))
    size = (size + 1) // 2
    cin = 24
    for stage, (cout, units) in enumerate(zip(widths[:3], [4, 8, 4]), start=2):
        for i in range(units):
            stride = 2 if i == 0 else 1
            if stride == 2:
                size = (size + 1) // 2
            scope = f"/stage{stage}/stage{stage}.{i}"
            x = unit(b, x, scope, cin, cout, stride)
            x = shuffle(b, x, scope, cout, size)
            cin = cout
    x = b.conv_bn(x, "/conv5/conv5.0", "conv5.0", cin, widths[3], 1, 1, 1, True, "/conv5/conv5.1", "conv5.1")
    x = b.relu(x, "/conv5/conv5.2")
    if mean_head:
        x = b.node("", "ReduceMean", [x], dict(axes=[2, 3], keepdims=0))
    else:
        x = b.node("/globalpool", "GlobalAveragePool", [x])
        x = b.node("", "Flatten", [x], dict(axis=1))
    w = b.rng.normal(0, np.sqrt(2.0 / widths[3]), (classes, widths[3])).astype(np.float32)
    bias = b.rng.uniform(-0.1, 0.1, classes).astype(np.float32)
    x = b.node("/fc", "Gemm", [x, b.init("fc.weight", w), b.init("fc.bias", bias)],
               dict(alpha=1.0, beta=1.0, transB=1))
    b.nodes[-1].output[0] = "output"
    graph = helper.make_graph(
        b.nodes, "main_graph",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch_size", 3, resolution, resolution])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch_size", classes])],
        initializer=b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="pytorch", producer_version="2.4.0")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fold-bn", action="store_true")
    p.add_argument("--mean-head", action="store_true")
    a = p.parse_args()
    onnx.save(build(a.width, a.resolution, a.classes, a.seed, a.fold_bn, a.mean_head), a.out)


if __name__ == "__main__":
    main()
