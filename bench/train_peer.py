"""Training speed of shufflekit against PyTorch eager and torch.compile.

Run by bench/train-peer.sh. Our side is `train_steps` (train/examples):
it describes the network (the graph's nodes in order) and the batches, and
PyTorch builds the same nodes in the same order, checks the trainable
parameter count, and trains on the same batches with the same batch size,
thread count and SGD (momentum, weight decay on conv and linear weights
only). Engines run interleaved in rounds (ours, eager, compile, ours, ...);
each round times `--steps` steps after `--warmup` steps, and the table shows
the median images/s of the rounds per engine.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class ChannelShuffle(nn.Module):
    def __init__(self, groups):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def module_of(node):
    op = node["op"]
    if op == "conv":
        return nn.Conv2d(node["in_channels"], node["out"], tuple(node["kernel"]),
                         stride=tuple(node["stride"]), padding=tuple(node["padding"]),
                         dilation=tuple(node["dilation"]), groups=node["groups"],
                         bias=node["bias"])
    if op == "batch_norm":
        return nn.BatchNorm2d(node["in_channels"], eps=node["eps"], momentum=0.1)
    if op == "relu":
        return nn.ReLU()
    if op == "channel_shuffle":
        return ChannelShuffle(node["groups"])
    if op == "avg_pool":
        return nn.AvgPool2d(tuple(node["kernel"]), stride=tuple(node["stride"]),
                            padding=tuple(node["padding"]), ceil_mode=node["ceil_mode"],
                            count_include_pad=node["count_include_pad"])
    if op == "global_avg_pool":
        return nn.AdaptiveAvgPool2d(1)
    if op == "flatten":
        return nn.Flatten()
    if op == "linear":
        return nn.Linear(node["in_channels"], node["out"], bias=node["bias"])
    if op in ("input", "concat", "add"):
        return None
    raise SystemExit(f"train_peer.py: no PyTorch mirror for node {node}")


class Mirror(nn.Module):
    """The graph's nodes in topological order, each reading its inputs."""

    def __init__(self, nodes):
        super().__init__()
        self.nodes = nodes
        self.layers = nn.ModuleDict()
        for i, node in enumerate(nodes):
            m = module_of(node)
            if m is not None:
                self.layers[str(i)] = m

    def forward(self, x):
        values = []
        for i, node in enumerate(self.nodes):
            args = [values[j] for j in node["inputs"]]
            op = node["op"]
            if op == "input":
                v = x
            elif op == "concat":
                v = torch.cat(args, dim=1)
            elif op == "add":
                v = args[0] + args[1]
            else:
                v = self.layers[str(i)](args[0])
            values.append(v)
        return values[-1]


def optimizer(model, meta):
    decay = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    ids = {id(p) for p in decay}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return torch.optim.SGD([{"params": decay, "weight_decay": meta["weight_decay"]},
                            {"params": rest, "weight_decay": 0.0}],
                           lr=meta["lr"], momentum=meta["momentum"])


def torch_engine(meta, batches, compiled):
    model = Mirror(meta["nodes"])
    model.train()
    params = sum(p.numel() for p in model.parameters())
    if params != meta["trainable_params"]:
        raise SystemExit(f"train_peer.py: PyTorch mirror has {params} parameters, "
                         f"shufflekit {meta['trainable_params']}")
    opt = optimizer(model, meta)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    if compiled:
        step = torch.compile(step)
    k = [0]

    def run(n):
        for _ in range(n):
            x, y = batches[k[0] % len(batches)]
            step(x, y)
            k[0] += 1

    return run


def cpu_flags():
    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    want = ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"]
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return model, " ".join(f for f in want if f in flags)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", required=True, help="the train_steps binary")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args()

    common = ["--threads", str(a.threads), "--batch", str(a.batch)]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([a.ours, *common, "--describe", tmp], check=True)
        with open(os.path.join(tmp, "graph.json")) as f:
            meta = json.load(f)
        raw = np.fromfile(os.path.join(tmp, "batches.bin"), dtype="<u4")
    n, b = meta["batches"], meta["batch"]
    item = int(np.prod(meta["image"]))
    images = raw[: n * b * item].view("<f4").reshape(n, b, *meta["image"])
    labels = raw[n * b * item:].reshape(n, b).astype(np.int64)
    batches = [(torch.from_numpy(images[i].copy()), torch.from_numpy(labels[i].copy()))
               for i in range(n)]

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    engines = {"eager": torch_engine(meta, batches, False),
               "compile": torch_engine(meta, batches, True)}
    t0 = time.perf_counter()
    engines["compile"](a.warmup)  # compiles forward and backward
    compile_s = time.perf_counter() - t0

    def ours():
        out = subprocess.run([a.ours, *common, "--steps", str(a.steps),
                              "--warmup", str(a.warmup)], check=True,
                             capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])["images_per_s"]

    def theirs(name):
        run = engines[name]
        run(a.warmup)
        t = time.perf_counter()
        run(a.steps)
        return a.steps * a.batch / (time.perf_counter() - t)

    load_before = os.getloadavg()[0]
    rates = {"shufflekit": [], "eager": [], "compile": []}
    for r in range(a.rounds):
        rates["shufflekit"].append(ours())
        rates["eager"].append(theirs("eager"))
        rates["compile"].append(theirs("compile"))
        print(f"round {r + 1}/{a.rounds}: " + ", ".join(
            f"{k} {v[-1]:.0f}" for k, v in rates.items()), file=sys.stderr)

    model, flags = cpu_flags()
    print(f"ShuffleNet v1 0.5x g=3, 28x28x1, 10 classes, {meta['trainable_params']} trainable "
          f"parameters (equal on both sides); MNIST sample, batch {a.batch}, {a.threads} threads, "
          f"SGD lr {meta['lr']:.3g} momentum {meta['momentum']:.3g} weight decay {meta['weight_decay']:.3g}")
    print(f"{a.rounds} rounds (shufflekit, eager, compile) of {a.steps} timed steps after "
          f"{a.warmup} warm-up steps; torch {torch.__version__} "
          f"(CPU capability {torch.backends.cpu.get_cpu_capability()}), torch.compile "
          f"first compile {compile_s:.0f} s; Python {platform.python_version()}; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    print(f"CPU: {model}; flags: {flags}; {os.cpu_count()} CPUs, load average "
          f"{load_before:.1f} before the rounds, {os.getloadavg()[0]:.1f} after "
          f"(other work on the machine slows every engine)")
    print()
    print("| engine | median images/s | min | max | shufflekit / engine |")
    print("|---|---|---|---|---|")
    ours_med = statistics.median(rates["shufflekit"])
    for k, v in rates.items():
        med = statistics.median(v)
        print(f"| {k} | {med:.0f} | {min(v):.0f} | {max(v):.0f} | {ours_med / med:.2f}x |")


if __name__ == "__main__":
    main()
