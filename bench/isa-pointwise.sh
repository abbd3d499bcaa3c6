#!/usr/bin/env bash
# The pointwise tile on every vector tier: one-layer ShuffleNet v1 1x g=3
# shapes (bench/isa/pw28.yaml: stage 2, 28x28; pw7.yaml: stage 4, 7x7),
# `shufflekit bench --isa T` on 1 thread, tiers interleaved in ROUNDS
# rounds, then the median of the bench's pointwise G MAC/s per shape and
# tier. Usage: bench/isa-pointwise.sh [ROUNDS] (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
bin=${SHUFFLEKIT:-target/release/shufflekit}
cpu=$("$bin" bench bench/isa/pw7.yaml --iters 1 | grep '^cpu: ')
echo "$cpu"
tiers=${cpu##*tiers: }
out=$(mktemp)
for r in $(seq "$rounds"); do
  for s in pw28 pw7; do
    for isa in $tiers; do
      v=$("$bin" bench "bench/isa/$s.yaml" --iters 200 --isa "$isa" | awk '/^  pointwise/{print $5}')
      echo "$s $isa $v" >>"$out"
    done
  done
done
awk '{k=$1" "$2; v[k]=v[k]" "$3} END {for (k in v) print k, v[k]}' "$out" | sort |
  while read -r s isa vals; do
    med=$(echo "$vals" | tr ' ' '\n' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    echo "$s $isa median $med G MAC/s ($vals)"
  done
rm -f "$out"
