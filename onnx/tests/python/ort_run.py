"""Checks an ONNX model and runs it in ONNX Runtime (the tests' peer).

    python3 ort_run.py MODEL.onnx INPUT.npy OUTPUT.npy

Runs `onnx.checker.check_model(full_check=True)` (which also infers
shapes), then one inference on the CPU with one thread, and saves the first
output. Exits non-zero with the reason on any failure.
"""
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main():
    model_path, input_path, output_path = sys.argv[1:4]
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        model_path, sess_options=options, providers=["CPUExecutionProvider"]
    )
    x = np.load(input_path).astype(np.float32)
    name = session.get_inputs()[0].name
    (y, *_) = session.run(None, {name: x})
    np.save(output_path, np.ascontiguousarray(y, dtype=np.float32))


if __name__ == "__main__":
    main()
