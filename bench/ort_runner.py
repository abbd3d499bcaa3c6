"""Times an ONNX model in ONNX Runtime, for the peer benchmark (bench/peer.sh).

    python3 ort_runner.py MODEL.onnx INPUT.npy OUTPUT.npy --threads T --runs R --warmup W
    python3 ort_runner.py MODEL.onnx INPUT.npy OUTPUT.npy --threads T --warmup W --serve

One session on the CPU with `intra_op_num_threads = T`, `inter_op = 1`,
sequential execution and all graph optimisations; W unmeasured runs, then R
timed ones. Saves the last output and prints `median_ms M` and
`times_ms t1,t2,...` on stdout.

With `--serve` the session stays loaded for rounds interleaved with other
engines: after the warm-up it prints `ready`, then answers each line of
stdin: `time K` runs K timed runs and prints `times_ms t1,...`; `save`
writes the last output and prints `saved`; `quit` (or end of input) exits.
"""
import argparse
import sys
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
    p.add_argument("--serve", action="store_true")
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
        (y, *_) = session.run(None, feed)
    if a.serve:
        serve(session, feed, a.output)
        return
    times = []
    for _ in range(a.runs):
        start = time.perf_counter()
        (y, *_) = session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    np.save(a.output, np.ascontiguousarray(y, dtype=np.float32))
    print(f"median_ms {float(np.median(times)):.4f}")
    print("times_ms " + ",".join(f"{t:.4f}" for t in times))


def serve(session, feed, output):
    print("ready", flush=True)
    y = None
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["time"] and len(words) == 2:
            times = []
            for _ in range(int(words[1])):
                start = time.perf_counter()
                (y, *_) = session.run(None, feed)
                times.append((time.perf_counter() - start) * 1e3)
            print("times_ms " + ",".join(f"{t:.4f}" for t in times), flush=True)
        elif words == ["save"]:
            if y is None:
                (y, *_) = session.run(None, feed)
            np.save(output, np.ascontiguousarray(y, dtype=np.float32))
            print("saved", flush=True)
        elif words == ["quit"]:
            break
        else:
            print(f"error: unknown command {line.strip()!r}", flush=True)
            sys.exit(2)


if __name__ == "__main__":
    main()
