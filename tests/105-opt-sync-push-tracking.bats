#!/usr/bin/env bats
# opt-sync push over the network starts from what the tracking refs say:
# one connection to receive-pack, whose advertisement must match them for
# every collection pushed; anything else (a collection deleted or rewound
# at the remote, a server that is down, a collection we never pushed, a
# cluster replica that took writes, a peer that lost its copy) falls back
# to a fetch, verified, and the plan it makes.  Against git daemon on
# loopback.

load test_helper
load servers

export OPT_FSYNC=0
export OPT_CLUSTER_BACKOFF_MS=20

start_git_daemon() {
	local port
	mkdir -p "$TMP/srv"
	port=$(free_port)
	git daemon --verbose --reuseaddr --listen=127.0.0.1 --port="$port" --base-path="$TMP/srv" --export-all \
		--enable=receive-pack --informative-errors "$TMP/srv" >"$TMP/daemon.log" 2>&1 &
	SERVER_PIDS+=($!)
	wait_port "$port" || skip "git daemon did not start: $(cat "$TMP/daemon.log")"
	GITURL="git://127.0.0.1:$port"
	ignore_libgit2_leaks
}

# two clones c1 c2 of $GITURL/r, each trusted by the server and the other
two_clones() {
	local i n
	for i in 1 2; do
		opt-sync clone "$GITURL/r" "$TMP/c$i" --trust "$(key_of "$TMP/srv/r")" >/dev/null
	done
	for i in 1 2; do
		for n in srv/r c1 c2; do opt-log -C "$TMP/$n" trust "$(key_of "$TMP/c$i")" --name "c$i"; done
	done
}

@test "a collection deleted at the remote is pushed again, not reported up-to-date" {
	seed_served
	start_git_daemon
	two_clones
	opt-diary -C "$TMP/c1" append log '"c1"' >/dev/null
	opt-sync -C "$TMP/c1" push >/dev/null
	opt-sync -C "$TMP/c2" pull >/dev/null
	# c2 pushes once so that its tracking ref is at its head
	run opt-sync -C "$TMP/c2" push
	assert_success
	# the collection goes at the remote (deleted, or a store restored without it)
	git --git-dir="$TMP/srv/r" update-ref -d refs/opt/collections/log
	git --git-dir="$TMP/srv/r" show-ref refs/opt/collections/log && fail "still there"
	# c2 pushes: it must push log again
	run opt-sync -C "$TMP/c2" push
	assert_success
	assert_line --partial '"collection":"log","rev":2,"status":"pushed"'
	git --git-dir="$TMP/srv/r" show-ref refs/opt/collections/log
}

@test "a rewound remote with nothing new here: the push refuses (exit 4)" {
	seed_served
	start_git_daemon
	opt-sync clone "$GITURL/r" "$TMP/c" --trust "$(key_of "$TMP/srv/r")" >/dev/null
	opt-diary -C "$TMP/srv/r" append log '"two"' >/dev/null
	opt-sync -C "$TMP/c" pull >/dev/null
	git --git-dir="$TMP/srv/r" update-ref refs/opt/collections/log refs/opt/collections/log~1
	run --separate-stderr opt-sync -C "$TMP/c" push
	assert_failure 4
}

@test "an unreachable remote with nothing new here: exit 5" {
	seed_served
	start_git_daemon
	opt-sync clone "$GITURL/r" "$TMP/c" --trust "$(key_of "$TMP/srv/r")" >/dev/null
	kill "${SERVER_PIDS[@]}"; wait "${SERVER_PIDS[@]}" 2>/dev/null || true; SERVER_PIDS=()
	run --separate-stderr opt-sync -C "$TMP/c" push
	assert_failure 5
}

@test "a collection we never pushed that the remote has: replayed, not overwritten" {
	seed_served
	start_git_daemon
	two_clones
	opt-diary -C "$TMP/c1" append newc '"c1"' >/dev/null
	opt-sync -C "$TMP/c1" push >/dev/null
	opt-diary -C "$TMP/c2" append newc '"c2"' >/dev/null
	git --git-dir="$TMP/c2" show-ref | grep remotes/origin/newc && fail "c2 tracks newc"
	run opt-sync -C "$TMP/c2" push
	assert_success
	assert_line --partial '"collection":"newc","rev":2,"status":"replayed"'
	run opt-diary -C "$TMP/srv/r" count newc
	assert_output 2
}

@test "git:// replica ahead of us (we have nothing new) is taken, as for a path replica" {
	mkdir -p "$TMP/srv"
	opt-block init "$TMP/srv/p1" >/dev/null
	opt-block init "$TMP/srv/p2" >/dev/null
	for p in p1 p2; do opt-log -C "$TMP/srv/$p" trust "$(key_of "$OPT_STORE")" --name s >/dev/null; done
	start_git_daemon
	opt-sync peer add p1 "$GITURL/p1"
	opt-sync peer add p2 "$GITURL/p2"
	opt-diary append log '"one"' >/dev/null
	run opt-sync push
	assert_success
	home=$(opt-sync where log | jq -r .home)
	rep=$(opt-sync where log | jq -r '.peers[1]')
	opt-log trust "$(key_of "$TMP/srv/$rep")" --name rep
	opt-log -C "$TMP/srv/$home" trust "$(key_of "$TMP/srv/$rep")" --name rep
	opt-diary -C "$TMP/srv/$rep" append log '"replica again"' >/dev/null
	run opt-sync push
	assert_success
	assert_line "{\"remote\":\"$rep\",\"collection\":\"log\",\"rev\":2,\"status\":\"fast-forward\"}"
	[ "$(opt-diary -C "$TMP/srv/$home" count log)" = 2 ]
}

@test "rebalance copies a collection to a git:// peer that lost it (stale tracking ref)" {
	mkdir -p "$TMP/srv"
	opt-block init "$TMP/srv/p1" >/dev/null
	opt-block init "$TMP/srv/p2" >/dev/null
	for p in p1 p2; do opt-log -C "$TMP/srv/$p" trust "$(key_of "$OPT_STORE")" --name s >/dev/null; done
	start_git_daemon
	opt-sync peer add p1 "$GITURL/p1"
	opt-sync peer add p2 "$GITURL/p2"
	opt-diary append log '"one"' >/dev/null
	opt-sync push >/dev/null
	# a peer loses its copy (disk replaced: a fresh store at the same URL)
	rep=$(opt-sync where log | jq -r '.peers[1]')
	rm -rf "$TMP/srv/$rep"; opt-block init "$TMP/srv/$rep" >/dev/null
	opt-log -C "$TMP/srv/$rep" trust "$(key_of "$OPT_STORE")" --name s >/dev/null
	run opt-sync rebalance
	assert_success
	git --git-dir="$TMP/srv/$rep" show-ref refs/opt/collections/log || fail "rebalance did not copy log to $rep"
}

@test "a multi-collection transaction is pushed ref by ref, its primary last; other pushes go in one" {
	mkdir -p "$TMP/srv"
	opt-block init "$TMP/srv/r" >/dev/null
	opt-log -C "$TMP/srv/r" trust "$(key_of "$OPT_STORE")" --name s >/dev/null
	start_git_daemon
	opt-sync remote add origin "$GITURL/r"
	for c in x1 x2 x3; do echo "{\"collections\":{\"$c\":[{\"type\":\"put\",\"key\":\"k\",\"value\":1}]}}"; done |
		opt-log commit --each >/dev/null
	sleep 0.2
	: >"$TMP/daemon.log"
	run opt-sync push
	assert_success
	[ "$(grep -c '"status":"pushed"' <<<"$output")" -eq 3 ]
	sleep 0.2
	[ "$(grep -c 'Connection from' "$TMP/daemon.log")" -eq 1 ] || fail "$(cat "$TMP/daemon.log")"
	echo '{"collections":{"m1":[{"type":"put","key":"k","value":1}],"m2":[{"type":"append","entry":2}]}}' |
		opt-log commit >/dev/null
	sleep 0.2
	: >"$TMP/daemon.log"
	run opt-sync push
	assert_success
	assert_line --index 0 --partial '"collection":"m1","rev":1,"status":"pushed"'
	assert_line --index 1 --partial '"collection":"m2","rev":1,"status":"pushed"'
	sleep 0.2
	# one push for each collection (the optimistic check shares the first)
	[ "$(grep -c 'Connection from' "$TMP/daemon.log")" -eq 2 ] || fail "$(cat "$TMP/daemon.log")"
	run opt-log -C "$TMP/srv/r" verify m1 m2
	assert_success
	[ "$(opt-tree -C "$TMP/srv/r" get m1 k)" = '{"key":"k","value":1}' ]
	[ "$(opt-diary -C "$TMP/srv/r" count m2)" = 1 ]
}
