#!/bin/sh
# bench/blocks.sh - the block layer's figures (issue: the foundation).
# Prints one line per measurement.  Durable (fsync on) unless OPT_FSYNC=0.
# Usage: sh bench/blocks.sh [BINDIR]   (default build/bin)
set -e
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$top/build/bin}
PATH="$bin:$PATH"
export PATH
work=$(mktemp -d "${TMPDIR:-/tmp}/opt-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
export OPT_STORE="$work/store"
opt-block init "$OPT_STORE" >/dev/null

# the clock, read without starting an interpreter (that would count)
now() { date +%s.%N; }
rate() { python3 -c "import sys; n=$1; t=$2; print('%-58s %10.0f /s  (%d in %.2f s)' % (sys.argv[1], n/t, n, t))" "$3"; }

# 1. the start-up floor
cc -O2 -o "$work/floor" "$top/bench/floor.c" $(pkg-config --cflags --libs libgit2)
python3 - "$work/floor" "$bin/opt-block" <<'PY'
import subprocess, sys, time, os
def med(cmd, n=40, env=None):
    ts = []
    for _ in range(n):
        t = time.perf_counter(); subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL); ts.append(time.perf_counter() - t)
    ts.sort(); return ts[len(ts)//2] * 1000
print("%-58s %10.1f ms" % ("floor: empty process linked with libgit2", med([sys.argv[1]])))
print("%-58s %10.1f ms" % ("floor: + git_libgit2_init", med([sys.argv[1], "init"])))
PY

# 2. 100,000 blocks of ~200 bytes in one transaction
python3 "$top/bench/gen.py" blocks 100000 200 > "$work/blocks"
t0=$(now)
opt-block put -c bulk < "$work/blocks" > "$work/ids"
t1=$(now)
rate 100000 "$(python3 -c "print($t1-$t0)")" "put: 100,000 blocks in one transaction"

# 3. 100,000 random block reads in one process
sed 's/.*"id":"\([a-z2-7]*\)".*/"\1"/' "$work/ids" | python3 -c 'import sys,random; l=sys.stdin.readlines(); random.Random(7).shuffle(l); sys.stdout.writelines(l)' > "$work/rids"
t0=$(now)
opt-block get -c bulk - < "$work/rids" > /dev/null
t1=$(now)
rate 100000 "$(python3 -c "print($t1-$t0)")" "get: 100,000 random blocks, one process"

# one read per process, against the floor
python3 - "$bin/opt-block" "$(head -1 "$work/rids" | tr -d '"')" <<'PY'
import subprocess, sys, time
ts = []
for _ in range(40):
    t = time.perf_counter(); subprocess.run([sys.argv[1], "get", "-c", "bulk", sys.argv[2]], stdout=subprocess.DEVNULL); ts.append(time.perf_counter() - t)
ts.sort(); print("%-58s %10.1f ms" % ("get: one block per process (median of 40)", ts[20] * 1000))
PY

# 4. 1,000 transactions of 5 blocks, one process each
python3 "$top/bench/gen.py" txns 1000 5 > "$work/txns"
t0=$(now)
while IFS= read -r line; do
	printf '%s\n' "$line" | opt-block put -c small > /dev/null
done < "$work/txns"
t1=$(now)
rate 1000 "$(python3 -c "print($t1-$t0)")" "put: 1,000 x 5-block transactions, one process each"

# 5. the same streamed through one process (one transaction per document)
t0=$(now)
opt-block put -c stream --each < "$work/txns" > /dev/null
t1=$(now)
rate 1000 "$(python3 -c "print($t1-$t0)")" "put --each: 1,000 x 5-block transactions, one process"

# 6. write cost from the 1st to the 10,000th transaction (streamed)
python3 "$top/bench/gen.py" txns 10000 5 > "$work/txns10k"
# each transaction prints 5 lines (one per block): count transactions
opt-block put -c flat --each < "$work/txns10k" | python3 -c '
import sys, time
t = time.perf_counter(); n = 0; out = []
for line in sys.stdin:
    n += 1
    if n % 10000 == 0:
        now = time.perf_counter(); out.append("%.0f" % (2000 / (now - t))); t = now
print("%-58s %s txn/s" % ("put --each: 10,000 txns, rate per 2,000 (flat = no growth)", " ".join(out)))'
# and one process per transaction, the 1st-1,000th against the 9,001st-10,000th
python3 - "$bin/opt-block" "$work/txns10k" <<'PY'
import subprocess, sys, time
lines = open(sys.argv[2]).readlines()
def run(chunk):
    t = time.perf_counter()
    for l in chunk:
        subprocess.run([sys.argv[1], "put", "-c", "flatp"], input=l.encode(), stdout=subprocess.DEVNULL, check=True)
    return len(chunk) / (time.perf_counter() - t)
first = run(lines[:500])
# 9,000 more, streamed (the store grows to 9,500 transactions)
subprocess.run([sys.argv[1], "put", "-c", "flatp", "--each"], input="".join(lines[500:9500]).encode(), stdout=subprocess.DEVNULL, check=True)
last = run(lines[9500:])
print("%-58s %6.0f then %6.0f txn/s" % ("put: a process each, txns 1-500 vs 9,501-10,000", first, last))
PY
opt-block stat --compact | python3 -c '
import json, sys; s = json.load(sys.stdin)
print("%-58s %10d packs, %d objects, %.1f MB" % ("store after the run", s["packs"], s["objects"], s["pack_bytes"] / 1e6))'
