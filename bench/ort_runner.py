"""Times an ONNX model in ONNX Runtime, for the peer benchmark (bench/peer.sh).

    python3 ort_runner.py MODEL.onnx INPUT.npy OUTPUT.npy --threads T --runs R --warmup W

One session on the CPU with `intra_op_num_threads = T`, `inter_op = 1`,
sequential execution and all graph optimisations; W unmeasured runs, then R
timed ones. Saves the last output and prints `median_ms M` and
`times_ms t1,t2,...` on stdout.
"""
import argparse
import time

import numpy as np
import onnxruntime as ort


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    a = p.parse_args()
    options = ort.SessionOptions()
    options.intra_op_num_threads = a.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(a.model, sess_options=options, providers=["CPUExecutionProvider"])
    x = np.load(a.input).astype(np.float32)
    feed = {session.get_inputs()[0].name: x}
    for _ in range(a.warmup):
        session.run(None, feed)
    times = []
    for _ in range(a.runs):
        start = time.perf_counter()
        (y, *_) = session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    np.save(a.output, np.ascontiguousarray(y, dtype=np.float32))
    print(f"median_ms {float(np.median(times)):.4f}")
    print("times_ms " + ",".join(f"{t:.4f}" for t in times))


if __name__ == "__main__":
    main()
