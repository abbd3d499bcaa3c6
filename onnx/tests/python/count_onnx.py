"""Counts multiply-adds and parameters of an ONNX model from the ONNX file
itself, independently of shufflekit's importer (the tests compare the two).

    python3 count_onnx.py MODEL.onnx OUT.txt

The shape of every Conv, Gemm and MatMul output is measured by running the
model in ONNX Runtime with those outputs added to the graph (shape
inference alone leaves the dims after TorchScript's Shape->Slice chunks
unknown). Per image: a Conv costs output elements x (input channels /
group) x kernel area multiply-adds; a Gemm or MatMul costs output elements
x inner size. Parameters are the elements of the Conv and Gemm/MatMul
weights and biases and of the BatchNormalization scales and biases
(running statistics are buffers, not parameters), each initializer counted
once. Writes `macs params`.
"""
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper, TensorProto

COUNTED = ("Conv", "Gemm", "MatMul")


def output_shapes(model, names):
    """The shapes of the values `names`, from one run on zeros."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    outputs = {o.name for o in m.graph.output}
    for name in names:
        if name not in outputs:
            m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {}
    for i in session.get_inputs():
        dims = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        feeds[i.name] = np.zeros(dims, np.float32)
    results = session.run(list(names), feeds)
    return {n: r.shape for n, r in zip(names, results)}


def main():
    model_path, out_path = sys.argv[1:3]
    model = onnx.load(model_path)
    g = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    # Identity of an initializer (TorchScript shares biases this way).
    for n in g.node:
        if n.op_type == "Identity" and n.input[0] in inits:
            inits[n.output[0]] = inits[n.input[0]]
    shapes = output_shapes(model, [n.output[0] for n in g.node if n.op_type in COUNTED])
    macs, params, counted = 0, 0, set()

    def param(name):
        nonlocal params
        if name and name in inits and name not in counted:
            counted.add(name)
            params += int(inits[name].size)

    for n in g.node:
        if n.op_type in COUNTED:
            w = inits[n.input[1]]
            out = shapes[n.output[0]]
            assert out[0] == 1, f"{n.name}: batch {out[0]}"
            if n.op_type == "Conv":
                per_output = int(np.prod(w.shape[1:]))
            elif n.op_type == "Gemm" and any(a.name == "transB" and a.i for a in n.attribute):
                per_output = int(w.shape[1])
            else:
                per_output = int(w.shape[0])
            macs += int(np.prod(out[1:])) * per_output
            for i in n.input[1:]:
                param(i)
        elif n.op_type == "BatchNormalization":
            param(n.input[1])
            param(n.input[2])
    with open(out_path, "w") as f:
        f.write(f"{macs} {params}\n")


if __name__ == "__main__":
    main()
