#!/bin/sh
# bench/tree.sh - trees and diaries (the structures issue).  Prints one
# line per figure.  N (default 1000000) records for the bulk figures.
# Usage: sh bench/tree.sh [BINDIR]
set -e
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$top/build/bin}
N=${N:-1000000}
PATH="$bin:$PATH"
export PATH
work=$(mktemp -d "${TMPDIR:-/tmp}/opt-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
export OPT_STORE="$work/store"
opt-block init "$OPT_STORE" >/dev/null
# the clock, read without starting an interpreter (that would count)
t() { date +%s.%N; }
rate() { python3 -c "import sys; n=$1; t=$2; print('%-58s %10.0f /s  (%d in %.2f s)' % (sys.argv[1], n/t, n, t))" "$3"; }
peak() { /usr/bin/time -f '%M' "$@" 2>&1 >/dev/null | tail -1; }

python3 "$top/bench/gen.py" records "$N" > "$work/recs"
data=$(stat -c %s "$work/recs")

# bulk put in one transaction
t0=$(t); opt-tree put big < "$work/recs" >/dev/null; t1=$(t)
rate "$N" "$(python3 -c "print($t1-$t0)")" "tree put: $N records, one transaction"
disk=$(du -sb "$OPT_STORE/objects" | cut -f1)
python3 -c "print('%-58s %10.2f x   (%.1f MB for %.1f MB of records)' % ('tree put: store size / data size', $disk/$data, $disk/1e6, $data/1e6))"

# 100,000 lookups in one process, keys on stdin
python3 -c "
import json,random,sys
ks=[json.loads(l)['key'] for l in open('$work/recs')]
random.Random(3).shuffle(ks)
sys.stdout.write('\n'.join(ks[:100000])+'\n')" > "$work/keys"
t0=$(t); opt-tree get big - < "$work/keys" >/dev/null; t1=$(t)
rate 100000 "$(python3 -c "print($t1-$t0)")" "tree get: 100,000 random keys, one process"
python3 - "$bin/opt-tree" "$(head -1 "$work/keys")" <<'PY'
import subprocess, sys, time
def med(cmd, n=40):
    ts = []
    for _ in range(n):
        t = time.perf_counter(); subprocess.run(cmd, stdout=subprocess.DEVNULL); ts.append(time.perf_counter() - t)
    ts.sort(); return ts[n // 2] * 1000
print("%-58s %10.1f ms" % ("tree get: one key per process (median of 40)", med([sys.argv[1], "get", "big", sys.argv[2]])))
print("%-58s %10.1f ms" % ("floor: opt-tree --version (process start, median)", med([sys.argv[1], "--version"])))
PY

# full range
t0=$(t); m=$(peak opt-tree range big); t1=$(t)
rate "$N" "$(python3 -c "print($t1-$t0)")" "tree range: all $N records to /dev/null"
echo "tree range: peak memory                                    $((m / 1024)) MB"

# 1,000 separate processes of 100 records each
head -100000 "$work/recs" > "$work/recs100k"
t0=$(t)
python3 - "$work/recs100k" "$bin/opt-tree" <<'PY'
import subprocess, sys
lines = open(sys.argv[1]).readlines()
for i in range(0, len(lines), 100):
    subprocess.run([sys.argv[2], "put", "procs"], input="".join(lines[i:i+100]).encode(), stdout=subprocess.DEVNULL, check=True)
PY
t1=$(t)
rate 1000 "$(python3 -c "print($t1-$t0)")" "tree put: 1,000 processes x 100 records (transactions)"

# diary: 100,000 events in batches of 1,000, then a full read
python3 -c "
import json
for i in range(100000): print(json.dumps({'event':'click','n':i,'page':'/p/%d'%(i%97)}))" > "$work/events"
t0=$(t)
split -l 1000 "$work/events" "$work/ev."
for f in "$work"/ev.*; do opt-diary append events < "$f" >/dev/null; done
t1=$(t)
rate 100000 "$(python3 -c "print($t1-$t0)")" "diary append: 100,000 events in 100 transactions"
t0=$(t); m=$(peak opt-diary read events); t1=$(t)
rate 100000 "$(python3 -c "print($t1-$t0)")" "diary read: all 100,000 events"
echo "diary read: peak memory                                    $((m / 1024)) MB"
