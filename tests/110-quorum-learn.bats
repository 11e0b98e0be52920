#!/usr/bin/env bats
# Learning and the owed list in a quorum cluster (docs/quorum.md,
# "Learning", "Durability, and what is owed"): a peer's learned ref
# (refs/opt/collections/C, what a reader of that peer alone sees) lags
# one write in the steady state; a later push, even one with nothing new
# to write, sends what each reachable peer lacks; records say
# "durability":"full" once every peer of the placement learned the
# chosen value, "majority" while one still lacks it.
# And exactly once (docs/quorum.md, "The change function"): a replayed
# transaction keeps its ID, and one whose ID is already in the history
# replayed onto is never applied again, whichever way it arrived.

load test_helper
load servers
load sync_helper

export OPT_CLUSTER_BACKOFF_MS=20

# git daemon i (1..3) serving the bare repository $TMP/srv$i/p: DPID[i],
# PORT[i].
start_peer() {
	local i=$1 port tries ok=
	command -v git >/dev/null || skip "git is not installed"
	[ -x "$(git --exec-path)/git-daemon" ] || skip "git daemon is not available"
	[ -d "$TMP/srv$i/p" ] || git init -q --bare "$TMP/srv$i/p"
	for tries in 1 2 3; do
		port=${PORT[$i]:-$(free_port)} || continue
		# the daemon itself (git daemon would be a wrapper process)
		"$(git --exec-path)/git-daemon" --verbose --reuseaddr --listen=127.0.0.1 --port="$port" --base-path="$TMP/srv$i" --export-all \
			--enable=receive-pack "$TMP/srv$i" >>"$TMP/daemon$i.log" 2>&1 &
		DPID[$i]=$!
		SERVER_PIDS+=($!)
		wait_port "$port" && ok=1 && break
	done
	[ -n "$ok" ] || skip "git daemon did not start"
	PORT[$i]=$port
}

# Writer store $1 with the three daemons as peers, R = 3, quorum ordering.
writer_of() {
	local i
	[ -d "$1" ] || opt-block init "$1" >/dev/null
	for i in 1 2 3; do opt-sync -C "$1" peer add "p$i" "git://127.0.0.1:${PORT[$i]}/p" >/dev/null; done
	opt-sync -C "$1" replicas 3 >/dev/null
	opt-sync -C "$1" ordering quorum >/dev/null
}

three_peers() {
	declare -gA PORT DPID
	start_peer 1
	start_peer 2
	start_peer 3
	writer_of "$OPT_STORE"
}

# What peer $1 (1..3) has learned of collection $2 ("" if nothing).
learned_at() { git --git-dir="$TMP/srv$1/p" rev-parse -q --verify "refs/opt/collections/$2" 2>/dev/null || true; }
chosen_in() { git --git-dir="$1" rev-parse -q --verify "refs/opt/chosen/$2"; }

@test "quorum learn: a push with nothing new sends the last chosen value to every peer (durability full), then nothing" {
	three_peers
	opt-tree put users alice 1 >/dev/null
	opt-sync push >/dev/null
	opt-tree put users bob 2 >/dev/null
	run opt-sync push
	assert_success
	assert_line --partial '"collection":"users","status":"chosen","durability":"majority"'
	head=$(chosen_in "$OPT_STORE" users)
	for i in 1 2 3; do [ "$(learned_at $i users)" != "$head" ]; done
	run opt-sync push
	assert_success
	assert_line --partial '"collection":"users","status":"chosen","durability":"full"'
	for i in 1 2 3; do [ "$(learned_at $i users)" = "$head" ]; done
	# a reader of one peer alone sees the last write
	opt-block init "$TMP/r" >/dev/null
	opt-log -C "$TMP/r" trust "$(key_of "$OPT_STORE")" --name s >/dev/null
	opt-sync -C "$TMP/r" remote add origin "git://127.0.0.1:${PORT[2]}/p" >/dev/null
	opt-sync -C "$TMP/r" pull origin >/dev/null
	run opt-tree -C "$TMP/r" get users bob
	assert_output '{"key":"bob","value":2}'
	# nothing owed any more: no connection at all
	for i in 1 2 3; do : >"$TMP/daemon$i.log"; done
	run opt-sync push
	assert_success
	assert_line --partial '"durability":"full"'
	for i in 1 2 3; do [ "$(grep -c 'Connection from' "$TMP/daemon$i.log")" -eq 0 ]; done
}

@test "quorum learn: a peer down stays owed (durability majority); back up, the next push sends it" {
	three_peers
	opt-tree put users alice 1 >/dev/null
	opt-sync push >/dev/null
	kill -9 "${DPID[3]}"
	opt-tree put users bob 2 >/dev/null
	opt-sync push >/dev/null
	head=$(chosen_in "$OPT_STORE" users)
	run opt-sync push
	assert_success
	assert_line --partial '"collection":"users","status":"chosen","durability":"majority"'
	for i in 1 2; do [ "$(learned_at $i users)" = "$head" ]; done
	[ "$(learned_at 3 users)" != "$head" ]
	start_peer 3
	run opt-sync push
	assert_success
	assert_line --partial '"durability":"full"'
	[ "$(learned_at 3 users)" = "$head" ]
}

@test "quorum learn: another writer's push with nothing new learns its own chosen value, never rewinds a later one" {
	three_peers
	writer_of "$TMP/w"
	opt-log trust "$(key_of "$TMP/w")" --name w >/dev/null
	opt-log -C "$TMP/w" trust "$(key_of "$OPT_STORE")" --name s >/dev/null
	opt-diary append log '"a1"' >/dev/null
	opt-sync push >/dev/null
	opt-diary -C "$TMP/w" append log '"b1"' >/dev/null
	opt-sync -C "$TMP/w" push >/dev/null
	opt-sync -C "$TMP/w" push >/dev/null
	head=$(chosen_in "$TMP/w" log)
	for i in 1 2 3; do [ "$(learned_at $i log)" = "$head" ]; done
	# the first writer knows an older chosen value: its push leaves the peers at the later one
	run opt-sync push
	assert_success
	for i in 1 2 3; do [ "$(learned_at $i log)" = "$head" ]; done
}

@test "quorum learn: path peers learn on a push with nothing new" {
	local i
	for i in 1 2 3; do opt-block init "$TMP/q$i" >/dev/null; done
	for i in 1 2 3; do opt-sync peer add "q$i" "$TMP/q$i" >/dev/null; done
	opt-sync replicas 3 >/dev/null
	opt-sync ordering quorum >/dev/null
	opt-diary append log '"a1"' >/dev/null
	opt-sync push >/dev/null
	opt-diary append log '"a2"' >/dev/null
	opt-sync push >/dev/null
	head=$(chosen_in "$OPT_STORE" log)
	[ "$(git --git-dir="$TMP/q1" rev-parse refs/opt/collections/log)" != "$head" ]
	run opt-sync push
	assert_success
	assert_line --partial '"durability":"full"'
	for i in 1 2 3; do [ "$(git --git-dir="$TMP/q$i" rev-parse refs/opt/collections/log)" = "$head" ]; done
}

@test "exactly once: a replay keeps the transaction's ID (home ordering); opt-log status finds it" {
	seed "$TMP/a"
	opt-sync clone "$TMP/a" "$TMP/b" >/dev/null
	trust_all "$TMP/a" "$TMP/b"
	opt-diary -C "$TMP/a" append events '"A"' >/dev/null
	opt-diary -C "$TMP/b" append events '"B"' >/dev/null
	trx=$(opt-log -C "$TMP/b" show events | tail -n 1 | jq -r .trx)
	[ -n "$trx" ] && [ "$trx" != null ]
	run opt-sync -C "$TMP/b" push
	assert_success
	assert_line --partial '"status":"replayed","replayed":1'
	[ "$(opt-log -C "$TMP/b" show events | tail -n 1 | jq -r .trx)" = "$trx" ]
	[ "$(opt-log -C "$TMP/a" show events | tail -n 1 | jq -r .trx)" = "$trx" ]
	run opt-log -C "$TMP/b" status "$trx"
	assert_success
	assert_output --partial '"status":"committed"'
	run opt-log -C "$TMP/a" status "$trx"
	assert_success
}

@test "exactly once: a transaction pulled, then met again replayed elsewhere, is not applied twice" {
	seed "$TMP/a"
	opt-sync clone "$TMP/a" "$TMP/b" >/dev/null
	opt-sync clone "$TMP/a" "$TMP/c" >/dev/null
	opt-sync clone "$TMP/a" "$TMP/d" >/dev/null
	for s in a b c d; do trust_all "$TMP/$s" "$TMP/a" "$TMP/b" "$TMP/c" "$TMP/d"; done
	opt-sync -C "$TMP/b" remote add d "$TMP/d" >/dev/null
	opt-sync -C "$TMP/c" remote add d "$TMP/d" >/dev/null
	opt-diary -C "$TMP/d" append events '"Z"' >/dev/null
	opt-diary -C "$TMP/b" append events '"X"' >/dev/null
	opt-sync -C "$TMP/b" push origin >/dev/null
	# X reaches d replayed onto Z
	run opt-sync -C "$TMP/b" push d
	assert_success
	# c pulled X from a, wrote Y, then pulls d (which holds X replayed)
	opt-sync -C "$TMP/c" pull origin >/dev/null
	opt-diary -C "$TMP/c" append events '"Y"' >/dev/null
	run opt-sync -C "$TMP/c" pull d
	assert_success
	run opt-diary -C "$TMP/c" read events
	[ "$(grep -c '^"X"$' <<<"$output")" -eq 1 ]
	[ "$(grep -c '^"Y"$' <<<"$output")" -eq 1 ]
	[ "$(grep -c '^"Z"$' <<<"$output")" -eq 1 ]
	# and a later push and pull keep it once
	opt-sync -C "$TMP/c" push d >/dev/null
	opt-sync -C "$TMP/b" pull d >/dev/null
	run opt-diary -C "$TMP/b" read events
	[ "$(grep -c '^"X"$' <<<"$output")" -eq 1 ]
}

@test "exactly once: quorum ordering keeps the ID of a replayed transaction" {
	three_peers
	writer_of "$TMP/w"
	opt-log trust "$(key_of "$TMP/w")" --name w >/dev/null
	opt-log -C "$TMP/w" trust "$(key_of "$OPT_STORE")" --name s >/dev/null
	opt-diary append log '"a1"' >/dev/null
	opt-sync push >/dev/null
	opt-diary -C "$TMP/w" append log '"b1"' >/dev/null
	trx=$(opt-log -C "$TMP/w" show log | tail -n 1 | jq -r .trx)
	run opt-sync -C "$TMP/w" push
	assert_success
	assert_line --partial '"replayed":1'
	[ "$(opt-log -C "$TMP/w" show log | tail -n 1 | jq -r .trx)" = "$trx" ]
	run opt-log -C "$TMP/w" status "$trx"
	assert_success
	assert_output --partial '"status":"committed"'
	# the first writer's next write is replayed onto it: b1 once
	opt-diary append log '"a2"' >/dev/null
	opt-sync push >/dev/null
	opt-sync push >/dev/null
	run opt-diary read log
	assert_output '"a1"
"b1"
"a2"'
}
