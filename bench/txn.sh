#!/bin/sh
# bench/txn.sh - transactions (the transactions issue).
# Usage: sh bench/txn.sh [BINDIR]
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
t() { date +%s.%N; }
rate() { python3 -c "import sys; n=$1; t=$2; print('%-58s %10.0f /s  (%d in %.2f s)' % (sys.argv[1], n/t, n, t))" "$3"; }

# 2,000 single-entry transactions, one process each
t0=$(t)
python3 - "$bin/opt-tree" <<'PY'
import subprocess, sys
for i in range(2000):
    subprocess.run([sys.argv[1], "put", "sep", "k%05d" % i, '{"n":%d}' % i], stdout=subprocess.DEVNULL, check=True)
PY
t1=$(t)
rate 2000 "$(python3 -c "print($t1-$t0)")" "tree put: 2,000 single-entry transactions, a process each"

# a stream of 20,000 single-entry transactions through one process
python3 -c "
import json
for i in range(20000): print(json.dumps({'key':'k%06d'%i,'value':{'n':i}}))" > "$work/stream"
t0=$(t); opt-tree put stream --each < "$work/stream" >/dev/null; t1=$(t)
rate 20000 "$(python3 -c "print($t1-$t0)")" "tree put --each: 20,000 transactions, group-committed"

# 1,000 two-collection transactions with opt-log commit, and 1,000
# single-collection ones for comparison (one process for all, --each)
python3 -c "
import json
for i in range(1000): print(json.dumps({'collections':{'acct':[{'type':'put','key':'a%d'%i,'value':i}],'audit':[{'type':'append','entry':{'n':i}}]}}))" > "$work/two"
python3 -c "
import json
for i in range(1000): print(json.dumps({'collections':{'solo':[{'type':'put','key':'a%d'%i,'value':i}]}}))" > "$work/one"
t0=$(t); opt-log commit --each < "$work/two" >/dev/null; t1=$(t)
two=$(python3 -c "print($t1-$t0)")
rate 1000 "$two" "opt-log commit: 1,000 two-collection transactions"
t0=$(t); opt-log commit --each < "$work/one" >/dev/null; t1=$(t)
one=$(python3 -c "print($t1-$t0)")
rate 1000 "$one" "opt-log commit: 1,000 single-collection transactions"
python3 -c "print('%-58s %10.2f x' % ('two-collection cost relative to single-collection', $two/$one))"
