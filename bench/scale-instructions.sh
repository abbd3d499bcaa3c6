#!/usr/bin/env bash
# Growth of the spec front end with the number of layers, in instructions
# (valgrind's callgrind counts them; they do not depend on what else the
# machine runs, unlike times). For each generated layout at 10k, 30k and 100k
# nodes it counts the instructions of whole `shufflekit check` and
# `shufflekit flops` runs (parse, expand, shape inference, verify; flops adds
# the pass pipeline, the memory plan, counting and the table) and prints a
# Markdown table with the ratio 100k / 10k: linear growth gives 10,
# n log n gives 12.5. Extra arguments: the layouts (default: all four).
set -euo pipefail
cd "$(dirname "$0")/.."
SETUP_WHO="bench/scale-instructions.sh"
# shellcheck source=scripts/lib/setup.sh
. scripts/lib/setup.sh
safe_path
need_commands "counting instructions" "valgrind" -- valgrind
cargo build --release --quiet --bin shufflekit
cargo build --release --quiet -p shufflekit-test-support --example scale_spec
layouts=("$@")
[ ${#layouts[@]} -gt 0 ] || layouts=(relu conv named repeat)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        target/release/shufflekit "$@" 2>&1 >/dev/null |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs); $(valgrind --version); $(git rev-parse --short HEAD)"
echo
echo "| spec | command | 10k | 30k | 100k | 100k / 10k |"
echo "|---|---|---|---|---|---|"
for layout in "${layouts[@]}"; do
    for n in 10000 30000 100000; do
        target/release/examples/scale_spec "$layout" "$n" > "$dir/$layout-$n.yaml"
    done
    for cmd in check flops; do
        row="| $layout | $cmd |"
        first=""
        last=""
        for n in 10000 30000 100000; do
            c=$(count "$cmd" "$dir/$layout-$n.yaml")
            [ -n "$c" ] || fail "callgrind gave no count for $cmd on $layout $n"
            row="$row $(awk -v c="$c" 'BEGIN { printf "%.1f M", c / 1e6 }') |"
            [ -n "$first" ] || first=$c
            last=$c
        done
        echo "$row $(awk -v a="$first" -v b="$last" 'BEGIN { printf "%.1f", b / a }') |"
    done
done
