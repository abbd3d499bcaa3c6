#!/usr/bin/env bash
# Training speed against PyTorch in one command: shufflekit's training step
# (train/examples/train_steps.rs), PyTorch eager and torch.compile on
# ShuffleNet v1 0.5x g=3 at 28x28x1, same nodes, parameter count, batches,
# batch size, thread count and SGD; interleaved rounds, median images/s and
# the ratios. PyTorch (CPU use only) is installed here, into its own
# environment, never by the tests.
# Extra arguments go to bench/train_peer.py (--threads, --batch, --rounds,
# --steps, --warmup).
set -euo pipefail
cd "$(dirname "$0")/.."
SETUP_WHO="bench/train-peer.sh"
# shellcheck source=scripts/lib/setup.sh
. scripts/lib/setup.sh
safe_path
# torch.compile's CPU back end compiles C++ with the system compiler.
need_commands "torch.compile's C++ code generation" "g++" -- g++
# OpenMP threads that spin while they wait (libgomp's default) stall each
# other on a machine shared with other work: PyTorch eager at 2 threads fell
# from 81 to 11 images/s here. Passive waiting is PyTorch's best on such a
# machine; set OMP_WAIT_POLICY=ACTIVE to measure the default.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
python_env "$(pwd)/target/train-pyenv" "$(pwd)/bench/train-requirements.txt" torch numpy
cargo build --release --quiet -p shufflekit-train --example train_steps
target_dir=${CARGO_TARGET_DIR:-$(pwd)/target}
exec "$PYTHON" -I bench/train_peer.py --ours "$target_dir/release/examples/train_steps" "$@"
