#!/bin/sh
# bench/run.sh - every benchmark, printing figures (make bench).
top=$(cd "$(dirname "$0")/.." && pwd)
for b in "$top"/bench/blocks.sh "$top"/bench/tree.sh "$top"/bench/txn.sh "$top"/bench/small.sh "$top"/bench/cluster.sh "$top"/bench/quorum.sh "$top"/bench/sync.sh; do
	echo "== $(basename "$b")"
	sh "$b" "$top/build/bin" || exit 1
done
