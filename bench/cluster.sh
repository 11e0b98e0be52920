#!/bin/sh
# bench/cluster.sh - push to a 3-peer cluster with R=2 of 100 collections
# (the clusters issue): the time, and the connections the peers saw.
# The peers are served by one git daemon on loopback (--verbose: it logs
# every connection), and again as paths on this machine.
# Usage: sh bench/cluster.sh [BINDIR]
set -e
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$top/build/bin}
PATH="$bin:$PATH"
export PATH
work=$(mktemp -d "${TMPDIR:-/tmp}/opt-bench.XXXXXX")
daemon=
trap '[ -n "$daemon" ] && kill "$daemon" 2>/dev/null; rm -rf "$work"' EXIT
export OPT_STORE="$work/store"
opt-block init "$OPT_STORE" >/dev/null
# the clock, read without starting an interpreter (that would count)
t() { date +%s.%N; }
line() { printf '%-58s %s\n' "$1" "$2"; }

# 100 collections of 20 records each, one transaction each
python3 -c "
import json
for c in range(100):
    print(json.dumps({'collections': {'c%03d' % c: [{'type': 'put', 'key': 'k%02d' % k, 'value': {'n': k}} for k in range(20)]}}))
" | opt-log commit --each >/dev/null
key=$(opt-log identity | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')

# the push: $1 = label; the peers are already added
push() {
	t0=$(t)
	opt-sync push >"$work/out"
	t1=$(t)
	sessions=$(tail -n 1 "$work/out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cluster"]["sessions"])')
	copies=$(grep -c '"status":"pushed"' "$work/out" || true)
	line "$1: first push (100 collections, $copies copies)" "$(python3 -c "print('%.2f s' % ($t1-$t0))")"
	line "$1: sessions with peers (cluster summary)" "$sessions"
	opt-tree put c000 more 1 >/dev/null
	[ -z "$daemon" ] || { sleep 0.3; : >"$work/daemon.log"; }
	t0=$(t)
	opt-sync push >"$work/out"
	t1=$(t)
	line "$1: push of one changed collection" "$(python3 -c "print('%.2f s' % ($t1-$t0))")"
	if [ -n "$daemon" ]; then
		sleep 0.3
		line "$1: connections the daemon accepted (that push)" "$(grep -c 'Connection from' "$work/daemon.log" || true)"
	fi
}

# ---- git daemon peers ----
if [ -x "$(git --exec-path 2>/dev/null)/git-daemon" ]; then
	mkdir -p "$work/srv"
	for p in g1 g2 g3; do
		opt-block init "$work/srv/$p" >/dev/null
		opt-log -C "$work/srv/$p" trust "$key" >/dev/null
	done
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	git daemon --verbose --reuseaddr --listen=127.0.0.1 --port="$port" --base-path="$work/srv" --export-all \
		--enable=receive-pack "$work/srv" >"$work/daemon.log" 2>&1 &
	daemon=$!
	i=0
	until python3 -c "import socket; socket.create_connection(('127.0.0.1',$port)).close()" 2>/dev/null; do
		i=$((i + 1)); [ $i -lt 50 ] || { echo "git daemon did not start" >&2; exit 1; }
		sleep 0.1
	done
	: >"$work/daemon.log"
	for p in g1 g2 g3; do opt-sync peer add "$p" "git://127.0.0.1:$port/$p"; done
	push "git://"
	# count the first push's connections: rerun it on fresh peers
	opt-sync peer rm g1; opt-sync peer rm g2; opt-sync peer rm g3
	for p in h1 h2 h3; do
		opt-block init "$work/srv/$p" >/dev/null
		opt-sync peer add "$p" "git://127.0.0.1:$port/$p"
	done
	: >"$work/daemon.log"
	opt-sync push >/dev/null
	sleep 0.3
	line "git://: connections the daemon accepted (first push)" "$(grep -c 'Connection from' "$work/daemon.log" || true)"
	# a new store pulls the 100 collections from the cluster
	opt-block init "$work/reader" >/dev/null
	opt-log -C "$work/reader" trust "$key" >/dev/null
	for p in h1 h2 h3; do opt-sync -C "$work/reader" peer add "$p" "git://127.0.0.1:$port/$p"; done
	: >"$work/daemon.log"
	t0=$(t)
	opt-sync -C "$work/reader" pull >/dev/null
	t1=$(t)
	sleep 0.3
	line "git://: pull of the 100 collections into a new store" "$(python3 -c "print('%.2f s' % ($t1-$t0))")"
	line "git://: connections the daemon accepted (that pull)" "$(grep -c 'Connection from' "$work/daemon.log" || true)"
	for p in h1 h2 h3; do opt-sync remote rm "$p"; done
	for p in g1 g2 g3; do opt-sync remote rm "$p"; done
	kill "$daemon"
	daemon=
fi

# ---- path peers ----
for p in p1 p2 p3; do
	opt-block init "$work/$p" >/dev/null
	opt-sync peer add "$p" "$work/$p"
done
push "paths"
