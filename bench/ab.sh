#!/usr/bin/env bash
# A/B of two shufflekit binaries: `bench` interleaved (A, B, A, B ...) for
# ROUNDS rounds, then medians of latency and of the pointwise profile.
# Usage: bench/ab.sh A B ROUNDS LABEL BENCH-ARGS... (per-round rows in
# /tmp/pwb/LABEL.txt).
set -euo pipefail
a=$1; b=$2; rounds=$3; label=$4; shift 4
mkdir -p /tmp/pwb; out=/tmp/pwb/$label.txt; : > "$out"
for r in $(seq "$rounds"); do
  for which in before after; do
    bin=$a; [ $which = after ] && bin=$b
    o=$("$bin" bench "$@")
    lat=$(echo "$o" | awk '/^latency/{print $3}')
    pw=$(echo "$o" | awk '/^  pointwise/{print $2, $5}')
    peak=$(echo "$o" | awk '/^peak measured/{print $3}')
    echo "$which $lat $pw $peak" >> "$out"
  done
done
echo "== $label: $* ($(uptime | sed 's/.*load/load/'))"
python3 - "$out" <<'PY'
import sys, statistics as st
rows=[l.split() for l in open(sys.argv[1])]
for w in ("before","after"):
    r=[x for x in rows if x[0]==w]
    lat=[float(x[1]) for x in r]; ms=[float(x[2]) for x in r]; g=[float(x[3]) for x in r]; pk=[float(x[4]) for x in r]
    print(f"{w}: latency median {st.median(lat):.2f} ms {lat}; pointwise ms median {st.median(ms):.3f} {ms}; G MAC/s median {st.median(g):.2f} {g}; peaks {pk}")
PY
