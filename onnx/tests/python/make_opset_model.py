"""Builds a small network with onnx.helper at a given opset, writing each
op in the form that opset defines, for the importer's opset tests.

    python3 make_opset_model.py OPSET OUT.onnx

Split sizes are the `split` attribute before opset 13 and an input from 13;
Squeeze/Unsqueeze axes likewise; ReduceMean axes are an attribute before 18
and an input from 18; Clip bounds are inputs (opset 11 and later). The
channel counts of the slices come from a TorchScript-style shape
computation (Shape -> Gather -> Squeeze -> Div -> Unsqueeze) and the last
Reshape's target from Shape -> Gather -> Concat, which the importer must
fold. Weights are random from a fixed seed; the batch is symbolic.
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def main():
    opset, out = int(sys.argv[1]), sys.argv[2]
    rng = np.random.default_rng(opset)
    nodes, inits = [], []

    def init(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(op, inputs, outputs=1, **attrs):
        name = f"{op}_{len(nodes)}"
        outs = [f"{name}_out{i}" for i in range(outputs)]
        nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs[0] if outputs == 1 else outs

    def axes_op(op, x, axes):
        if opset >= 13:
            return node(op, [x, init(f"{op}_axes_{len(nodes)}", np.array(axes, np.int64))])
        return node(op, [x], axes=axes)

    y = node("Conv", ["input", init("w", rng.normal(0, 0.3, (8, 8, 3, 3)).astype(np.float32)),
                      init("b", rng.normal(0, 0.1, 8).astype(np.float32))],
             kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    y = node("Clip", [y, init("lo", np.array(0, np.float32)), init("hi", np.array(6, np.float32))])
    if opset >= 13:
        s0, s1 = node("Split", [y, init("sizes", np.array([3, 5], np.int64))], outputs=2, axis=1)
    else:
        s0, s1 = node("Split", [y], outputs=2, axis=1, split=[3, 5])
    s1 = node("Relu", [s1])
    cat = node("Concat", [s0, s1], axis=1)
    # end = unsqueeze(squeeze(shape(cat)[1:2]) / 2)
    shape = node("Shape", [cat])
    ch = node("Gather", [shape, init("one", np.array([1], np.int64))], axis=0)
    ch = axes_op("Squeeze", ch, [0])
    half = node("Div", [ch, init("two", np.array(2, np.int64))])
    end = axes_op("Unsqueeze", half, [0])
    axis1 = init("axis1", np.array([1], np.int64))
    left = node("Slice", [cat, init("zero", np.array([0], np.int64)), end, axis1])
    right = node("Slice", [cat, end, init("big", np.array([2**62], np.int64)), axis1])
    z = node("Concat", [right, left], axis=1)
    z = node("Reshape", [z, init("split_shape", np.array([-1, 2, 4, 6, 6], np.int64))])
    z = node("Transpose", [z], perm=[0, 2, 1, 3, 4])
    batch = node("Gather", [node("Shape", [cat]), init("zero_idx", np.array([0], np.int64))], axis=0)
    target = node("Concat", [batch, init("rest", np.array([8, 6, 6], np.int64))], axis=0)
    z = node("Reshape", [z, target])
    if opset >= 18:
        z = node("ReduceMean", [z, init("mean_axes", np.array([2, 3], np.int64))], keepdims=0)
    else:
        z = node("ReduceMean", [z], axes=[2, 3], keepdims=0)
    node("Gemm", [z, init("fc_w", rng.normal(0, 0.3, (5, 8)).astype(np.float32)),
                  init("fc_b", rng.normal(0, 0.1, 5).astype(np.float32))], transB=1)
    nodes[-1].output[0] = "output"
    graph = helper.make_graph(
        nodes, f"opset{opset}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 8, 6, 6])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 5])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, out)


if __name__ == "__main__":
    main()
