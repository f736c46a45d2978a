#!/usr/bin/env bash
# In-process A/B of the C++ instance map at two git revisions (development tool):
#   bash benchmarks/pp_stages/ab.sh REV_A [REV_B] [ROUNDS]
# REV_B defaults to the working tree. Both builds use the same -O3 flags and
# runtime ISA dispatch; the driver exits 1 if either differs from the reference.
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${PYTHON:-.venv/bin/python}
rev_a=${1:?usage: ab.sh REV_A [REV_B] [ROUNDS]}
rev_b=${2:-}
rounds=${3:-200}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/a" "$dir/b" "$dir/objA" "$dir/objB"
git archive "$rev_a" csrc | tar -x -C "$dir/a"
if [ -n "$rev_b" ]; then git archive "$rev_b" csrc | tar -x -C "$dir/b"; else cp -r csrc "$dir/b/"; fi
"$py" benchmarks/pp_stages/write_inputs.py "$dir"
for side in a b; do
  ns=hvx$(echo "$side" | tr ab AB)
  for f in "$dir/$side"/csrc/postprocess.cpp "$dir/$side"/csrc/pp_*.cpp; do
    g++ -O3 -std=c++17 -fPIC "-Dhvx=$ns" -I"$dir/$side/csrc" -c "$f" \
      -o "$dir/obj$(echo "$side" | tr ab AB)/$(basename "$f" .cpp).o"
  done
done
g++ -O3 -std=c++17 benchmarks/pp_stages/ab_driver.cpp "$dir"/objA/*.o "$dir"/objB/*.o \
  -o "$dir/ab_driver"
"$dir/ab_driver" "$dir" 16 256 256 "$rounds"
