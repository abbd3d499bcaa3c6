#!/usr/bin/env bash
# The peer benchmark in one command: shufflekit's JIT, ONNX Runtime and tract
# on ShuffleNet v1 1x g=3 / g=8 / 0.5x g=3, ShuffleNet v2 1x and MobileNet v1
# 1.0 at 224x224, batch 1 and 8, 1 and 2 threads, same weights and input;
# outputs checked against ONNX Runtime's; prints a Markdown table.
# Extra arguments go to peer-bench (e.g. --rounds 20 --runs 5, --only "v2", --batch 1).
set -euo pipefail
cd "$(dirname "$0")/.."
SETUP_WHO="bench/peer.sh"
# shellcheck source=scripts/lib/setup.sh
. scripts/lib/setup.sh
safe_path
# ONNX Runtime in an environment of its own, pinned (exports PYTHON).
python_env "$(pwd)/target/bench-pyenv" "$(pwd)/bench/requirements.txt" numpy onnxruntime
# tract builds in its own workspace (minutes the first time).
cargo build --release --quiet --manifest-path bench/tract-runner/Cargo.toml
cargo build --release --quiet -p peer-bench
exec target/release/peer-bench --python "$PYTHON" "$@"
