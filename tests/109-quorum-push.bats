#!/usr/bin/env bats
# opt-sync push through a quorum cluster (opt-sync ordering quorum;
# docs/quorum.md): three git daemons on 127.0.0.1 (bare repositories)
# or three stores on this machine (paths) as peers, R = 3; a write is
# chosen by a majority: one peer down, killed or stopped does not stop
# writes nor delay them; two down is exit 5 with the write kept local;
# two writers interleaving keep one chain with each transaction once; a
# forged acceptor state counts as a peer not answering.

load test_helper
load servers

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

# The value peer $1 (1..3) accepted last for collection $2 ("" if none).
accepted_at() { git --git-dir="$TMP/srv$1/p" rev-parse -q --verify "refs/opt/acceptors/collections/$2^2" 2>/dev/null || true; }
# What the store $1 knows chosen for collection $2.
chosen_in() { git --git-dir="$1" rev-parse -q --verify "refs/opt/chosen/$2"; }

@test "quorum push: chosen by the three peers, durability majority; steady state is one connection per peer" {
	three_peers
	opt-tree put users alice 1 >/dev/null
	run opt-sync push
	assert_success
	assert_line --partial '"collection":"users","status":"chosen","durability":"majority"'
	assert_line --partial '"ordering":"quorum"'
	head=$(git --git-dir="$OPT_STORE" rev-parse refs/opt/collections/users)
	[ "$(chosen_in "$OPT_STORE" users)" = "$head" ]
	for i in 1 2 3; do [ "$(accepted_at $i users)" = "$head" ]; done
	# the next write: one round (the accept also promised our next ballot)
	opt-tree put users bob 2 >/dev/null
	for i in 1 2 3; do : >"$TMP/daemon$i.log"; done
	run opt-sync push
	assert_success
	head=$(git --git-dir="$OPT_STORE" rev-parse refs/opt/collections/users)
	for i in 1 2 3; do
		[ "$(accepted_at $i users)" = "$head" ]
		[ "$(grep -c 'Connection from' "$TMP/daemon$i.log")" -eq 1 ]
	done
	# learned refs: only chosen values, one write behind in the steady state
	old=$(git --git-dir="$OPT_STORE" rev-parse "$head^")
	for i in 1 2 3; do [ "$(git --git-dir="$TMP/srv$i/p" rev-parse refs/opt/collections/users)" = "$old" ]; done
	# the old-id check: a peer whose ref moved is read again, nothing lost
	run opt-sync push
	assert_success
}

@test "quorum push: one of three peers killed, then two: exit 5 kept local; back up, the next push chooses it" {
	three_peers
	opt-tree put users alice 1 >/dev/null
	opt-sync push >/dev/null
	kill -9 "${DPID[3]}"
	opt-tree put users bob 2 >/dev/null
	run opt-sync push
	assert_success
	assert_line --partial '"status":"chosen","durability":"majority"'
	head=$(git --git-dir="$OPT_STORE" rev-parse refs/opt/collections/users)
	[ "$(chosen_in "$OPT_STORE" users)" = "$head" ]
	kill -9 "${DPID[2]}"
	opt-tree put users carol 3 >/dev/null
	run opt-sync push
	assert_failure 5
	assert_line --regexp '"status":"failed","durability":"local".*"error":"collection .users.: no majority of its 3 peers'
	assert_output --partial "no majority"
	[ "$(chosen_in "$OPT_STORE" users)" = "$head" ]
	start_peer 2
	start_peer 3
	run opt-sync push
	assert_success
	head=$(git --git-dir="$OPT_STORE" rev-parse refs/opt/collections/users)
	[ "$(chosen_in "$OPT_STORE" users)" = "$head" ]
	run opt-tree get users carol
	assert_output '{"key":"carol","value":3}'
}

@test "quorum push: a stopped peer (SIGSTOP) does not delay the write" {
	three_peers
	opt-tree put users alice 1 >/dev/null
	opt-sync push >/dev/null
	kill -STOP "${DPID[2]}"
	opt-tree put users bob 2 >/dev/null
	t0=$(date +%s%N)
	run opt-sync push
	t1=$(date +%s%N)
	kill -CONT "${DPID[2]}"
	assert_success
	assert_line --partial '"durability":"majority"'
	# well under the busy timeout (60 s here): the majority answered
	[ $(((t1 - t0) / 1000000)) -lt 5000 ]
	head=$(git --git-dir="$OPT_STORE" rev-parse refs/opt/collections/users)
	[ "$(accepted_at 1 users)" = "$head" ]
	[ "$(accepted_at 3 users)" = "$head" ]
	# the abandoned push's outcome is settled by reading: the next write
	# reaches the peer that was stopped
	opt-tree put users carol 3 >/dev/null
	run opt-sync push
	assert_success
	head=$(git --git-dir="$OPT_STORE" rev-parse refs/opt/collections/users)
	for i in 1 2 3; do [ "$(accepted_at $i users)" = "$head" ]; done
}

@test "quorum push: two writers interleaving keep one chain on every peer, each transaction once" {
	three_peers
	opt-block init "$TMP/w" >/dev/null
	opt-log trust "$(key_of "$TMP/w")" --name w >/dev/null
	opt-log -C "$TMP/w" trust "$(key_of "$OPT_STORE")" --name s >/dev/null
	writer_of "$TMP/w"
	for k in 1 2; do
		opt-tree put users "a$k" "$k" >/dev/null
		opt-tree -C "$TMP/w" put users "b$k" "$k" >/dev/null
		run opt-sync push
		assert_success
		run opt-sync -C "$TMP/w" push
		assert_success
	done
	# the first writer's next write goes onto what the second chose
	opt-tree put users a3 3 >/dev/null
	run opt-sync push
	assert_success
	assert_line --partial '"replayed":1'
	cs=$(chosen_in "$OPT_STORE" users)
	cw=$(chosen_in "$TMP/w" users)
	git --git-dir="$OPT_STORE" merge-base --is-ancestor "$cw" "$cs"
	[ "$(git --git-dir="$OPT_STORE" rev-parse refs/opt/collections/users)" = "$cs" ]
	for i in 1 2 3; do
		a=$(accepted_at $i users)
		[ "$a" = "$cs" ]
	done
	# every write once: six keys, six revisions (one transaction each)
	run opt-tree range users
	for k in 1 2; do assert_line --partial "\"a$k\""; assert_line --partial "\"b$k\""; done
	assert_line --partial '"a3"'
	[ "$(opt-log show users | wc -l)" -eq 5 ]
	run opt-log verify users
	assert_success
	# the learned refs only ever moved forward along that chain
	for i in 1 2 3; do
		l=$(git --git-dir="$TMP/srv$i/p" rev-parse refs/opt/collections/users)
		git --git-dir="$OPT_STORE" merge-base --is-ancestor "$l" "$cs"
	done
}

@test "quorum push: two writers pushing at the same time both get their writes chosen, each once" {
	three_peers
	opt-block init "$TMP/w" >/dev/null
	opt-log trust "$(key_of "$TMP/w")" --name w >/dev/null
	opt-log -C "$TMP/w" trust "$(key_of "$OPT_STORE")" --name s >/dev/null
	writer_of "$TMP/w"
	for k in 1 2; do
		opt-tree put users "a$k" "$k" >/dev/null
		opt-tree -C "$TMP/w" put users "b$k" "$k" >/dev/null
		opt-sync push >"$TMP/o1" 2>&1 &
		p1=$!
		opt-sync -C "$TMP/w" push >"$TMP/o2" 2>&1 &
		p2=$!
		wait "$p1" || { cat "$TMP/o1"; false; }
		wait "$p2" || { cat "$TMP/o2"; false; }
	done
	opt-tree put users a3 3 >/dev/null
	run opt-sync push
	assert_success
	run opt-tree range users
	for k in 1 2; do assert_line --partial "\"a$k\""; assert_line --partial "\"b$k\""; done
	[ "$(opt-log show users | wc -l)" -eq 5 ]
	cs=$(chosen_in "$OPT_STORE" users)
	for i in 1 2 3; do [ "$(accepted_at $i users)" = "$cs" ]; done
}

@test "quorum push: a forged acceptor state at a peer counts as a peer not answering" {
	three_peers
	opt-tree put users alice 1 >/dev/null
	opt-sync push >/dev/null
	# p1's state replaced by a commit the protocol did not write (its
	# promise lowered, so that another proposer could take over)
	st=$(git --git-dir="$TMP/srv1/p" rev-parse refs/opt/acceptors/collections/users)
	forged=$(git --git-dir="$TMP/srv1/p" cat-file commit "$st" | sed 's/^Opt-Promise: [0-9]*\./Opt-Promise: 1./' |
		git --git-dir="$TMP/srv1/p" hash-object -t commit -w --stdin)
	[ "$forged" != "$st" ]
	git --git-dir="$TMP/srv1/p" update-ref refs/opt/acceptors/collections/users "$forged"
	opt-tree put users bob 2 >/dev/null
	run opt-sync push
	assert_success
	assert_line --partial '"durability":"majority"'
	assert_line --partial '"behind":["p1"]'
	# the forged state is left as it is
	[ "$(git --git-dir="$TMP/srv1/p" rev-parse refs/opt/acceptors/collections/users)" = "$forged" ]
}

@test "quorum push: path peers (stores on this machine), two writers, each transaction once" {
	local i
	for i in 1 2 3; do opt-block init "$TMP/q$i" >/dev/null; done
	opt-block init "$TMP/w" >/dev/null
	opt-log trust "$(key_of "$TMP/w")" --name w >/dev/null
	opt-log -C "$TMP/w" trust "$(key_of "$OPT_STORE")" --name s >/dev/null
	for s in "$OPT_STORE" "$TMP/w"; do
		for i in 1 2 3; do opt-sync -C "$s" peer add "q$i" "$TMP/q$i" >/dev/null; done
		opt-sync -C "$s" replicas 3 >/dev/null
		opt-sync -C "$s" ordering quorum >/dev/null
	done
	opt-diary append log '"a1"' >/dev/null
	opt-diary -C "$TMP/w" append log '"b1"' >/dev/null
	run opt-sync push
	assert_success
	run opt-sync -C "$TMP/w" push
	assert_success
	assert_line --partial '"replayed":1'
	opt-diary append log '"a2"' >/dev/null
	run opt-sync push
	assert_success
	cs=$(chosen_in "$OPT_STORE" log)
	git --git-dir="$OPT_STORE" merge-base --is-ancestor "$(chosen_in "$TMP/w" log)" "$cs"
	for i in 1 2 3; do
		[ "$(git --git-dir="$TMP/q$i" rev-parse refs/opt/acceptors/collections/log^2)" = "$cs" ]
	done
	run opt-diary read log
	assert_output --partial '"a1"'
	assert_output --partial '"b1"'
	[ "$(opt-diary read log | grep -c '"b1"')" -eq 1 ]
	# a peer whose acceptor ref is locked by another counts as not answering
	touch "$TMP/q2/refs/opt/acceptors/collections/log.lock" 2>/dev/null ||
		{ mkdir -p "$TMP/q2/refs/opt/acceptors/collections" && touch "$TMP/q2/refs/opt/acceptors/collections/log.lock"; }
	opt-diary append log '"a3"' >/dev/null
	run opt-sync push
	assert_success
	assert_line --partial '"durability":"majority"'
	assert_line --partial '"behind":["q2"]'
}

@test "quorum push: a multi-collection transaction to replay onto another writer's value is refused (exit 3), its other collection waits" {
	local i
	for i in 1 2 3; do opt-block init "$TMP/q$i" >/dev/null; done
	opt-block init "$TMP/w" >/dev/null
	opt-log trust "$(key_of "$TMP/w")" --name w >/dev/null
	opt-log -C "$TMP/w" trust "$(key_of "$OPT_STORE")" --name s >/dev/null
	for s in "$OPT_STORE" "$TMP/w"; do
		for i in 1 2 3; do opt-sync -C "$s" peer add "q$i" "$TMP/q$i" >/dev/null; done
		opt-sync -C "$s" replicas 3 >/dev/null
		opt-sync -C "$s" ordering quorum >/dev/null
	done
	opt-tree put a k 1 >/dev/null
	run opt-sync push
	assert_success
	echo '{"collections":{"a":[{"type":"put","key":"w","value":1}],"b":[{"type":"put","key":"w","value":1}]}}' |
		opt-log -C "$TMP/w" commit >/dev/null
	run opt-sync -C "$TMP/w" push
	assert_failure 3
	assert_line --partial '"collection":"a","status":"failed","durability":"local"'
	assert_line --partial '"collection":"b","status":"failed","durability":"local"'
	assert_output --partial "multi-collection transaction to replay"
	assert_output --partial "waits for the collections before it"
	# nothing of it was chosen anywhere; it is kept in the writer's store
	for i in 1 2 3; do
		run git --git-dir="$TMP/q$i" rev-parse -q --verify refs/opt/acceptors/collections/b
		assert_failure
	done
	run opt-tree -C "$TMP/w" get b w
	assert_success
}
