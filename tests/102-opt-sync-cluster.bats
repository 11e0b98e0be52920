#!/usr/bin/env bats
# opt-sync clusters: peers, R, placement by consistent hashing (where),
# push and pull over each collection's cluster with real stores on this
# machine as peers (paths) and one over git daemon, peers that are down
# (retried, reported, exit 5 only when a collection is short of peers),
# the rebalance plan and the rebalance after a peer joins.

load test_helper
load servers

export OPT_CLUSTER_BACKOFF_MS=20

# Peers p1..p$1 (empty stores under $TMP) of the store $OPT_STORE.
make_peers() {
	local i
	for ((i = 1; i <= $1; i++)); do
		opt-block init "$TMP/p$i" >/dev/null
		opt-sync peer add "p$i" "$TMP/p$i"
		opt-log -C "$TMP/p$i" trust "$(key_of "$OPT_STORE")" --name s >/dev/null
	done
}

# $1 collections c1..c$1 in $OPT_STORE, each a tree with one key.
make_colls() {
	local i
	for ((i = 1; i <= $1; i++)); do echo "{\"collections\":{\"c$i\":[{\"type\":\"put\",\"key\":\"k\",\"value\":$i}]}}"; done |
		opt-log commit --each >/dev/null
}

# A second writer $TMP/w of peers p1 and p2 (each store trusting the
# other's key); b: a collection whose home is not a's; txn KEY: one
# transaction putting KEY in a and in $b.
two_writers_two_homes() {
	local p
	opt-block init "$TMP/w" >/dev/null
	opt-log -C "$TMP/w" trust "$(key_of "$OPT_STORE")" --name s
	opt-log trust "$(key_of "$TMP/w")" --name w
	for p in p1 p2; do
		opt-log -C "$TMP/$p" trust "$(key_of "$TMP/w")" --name w
		opt-sync -C "$TMP/w" peer add "$p" "$TMP/$p"
	done
	for b in b c d e f g h; do
		[ "$(opt-sync where a | jq -r .home)" != "$(opt-sync where "$b" | jq -r .home)" ] && break
	done
}
txn() { echo "{\"collections\":{\"a\":[{\"type\":\"put\",\"key\":\"$1\",\"value\":1}],\"$b\":[{\"type\":\"put\",\"key\":\"$1\",\"value\":1}]}}"; }

# The collections store $1 holds, one a line.
colls_of() { git --git-dir="$1" for-each-ref --format='%(refname:lstrip=3)' refs/opt/collections/ | sort; }

# The collections `where` places on peer $1, one a line.
placed_on() { opt-sync where | jq -r --arg p "$1" 'select(.peers | index($p)) | .collection' | sort; }

# git daemon (--verbose: it logs each connection) serving $TMP/srv; sets
# GITURL.
start_daemon() {
	command -v git >/dev/null || skip "git is not installed"
	[ -x "$(git --exec-path)/git-daemon" ] || skip "git daemon is not available"
	local port tries ok=
	for tries in 1 2 3; do
		port=$(free_port) || continue
		git daemon --verbose --reuseaddr --listen=127.0.0.1 --port="$port" --base-path="$TMP/srv" --export-all \
			--enable=receive-pack "$TMP/srv" >"$TMP/daemon.log" 2>&1 &
		SERVER_PIDS+=($!)
		wait_port "$port" && ok=1 && break
	done
	[ -n "$ok" ] || skip "git daemon did not start"
	GITURL="git://127.0.0.1:$port"
}

@test "peer add, ls, rm; replicas; where is the same from any store with the same peers" {
	run opt-sync where c1
	assert_failure 1
	assert_output --partial "no peers"
	make_peers 3
	run opt-sync peer ls
	assert_success
	assert_output "{\"name\":\"p1\",\"url\":\"$TMP/p1\"}
{\"name\":\"p2\",\"url\":\"$TMP/p2\"}
{\"name\":\"p3\",\"url\":\"$TMP/p3\"}"
	run opt-sync replicas
	assert_output '{"replicas":2,"configured":null,"peers":3}'
	run opt-sync replicas 3
	assert_output '{"replicas":3,"configured":3,"peers":3}'
	run opt-sync replicas 7
	assert_output '{"replicas":3,"configured":7,"peers":3}'
	run opt-sync replicas 0
	assert_output '{"replicas":2,"configured":null,"peers":3}'
	run opt-sync replicas two
	assert_failure 2
	# a plain remote is no peer until it is made one
	opt-block init "$TMP/x" >/dev/null
	opt-sync remote add x "$TMP/x"
	[ "$(opt-sync peer ls | wc -l)" -eq 3 ]
	run opt-sync peer add x "$TMP/x"
	assert_failure 2
	assert_output --partial "exists already"
	run opt-sync peer add nosuch
	assert_failure 1
	# another store naming the same peers (in another order) agrees
	opt-block init "$TMP/other" >/dev/null
	for p in p3 p1 p2; do opt-sync -C "$TMP/other" peer add "$p" "$TMP/$p"; done
	run opt-sync where c1 c2 c3 users a/b
	assert_success
	[ "${#lines[@]}" -eq 5 ]
	[ "$output" = "$(opt-sync -C "$TMP/other" where c1 c2 c3 users a/b)" ]
	# two distinct peers each, the home first
	for l in "${lines[@]}"; do
		[ "$(jq '.peers | unique | length' <<<"$l")" -eq 2 ]
		[ "$(jq -r '.home == .peers[0]' <<<"$l")" = true ]
	done
	# out of the cluster: the remote stays; remote rm drops the peer too
	opt-sync peer rm p3
	run opt-sync peer rm p3
	assert_failure 1
	opt-sync remote ls | grep -q '"p3"'
	opt-sync peer add x
	opt-sync remote rm x
	[ "$(opt-sync peer ls | jq -r .name | tr '\n' ' ')" = "p1 p2 " ]
}

@test "push puts each collection on exactly its placement, homes first; pull brings them back" {
	make_peers 3
	make_colls 20
	run --separate-stderr opt-sync push
	assert_success
	# one record per collection and peer, then the summary
	[ "$(grep -c '"status":"pushed"' <<<"$output")" -eq 40 ]
	assert_line '{"cluster":{"op":"push","collections":20,"peers":3,"replicas":2,"sessions":6,"down":[],"short":0}}'
	# the first record of each collection is its home's
	for c in c1 c7 c13; do
		home=$(opt-sync where "$c" | jq -r .home)
		[ "$(grep "\"collection\":\"$c\"" <<<"$output" | head -n 1 | jq -r .remote)" = "$home" ]
	done
	for p in p1 p2 p3; do
		[ "$(colls_of "$TMP/$p")" = "$(placed_on "$p")" ] || fail "$p holds $(colls_of "$TMP/$p" | tr '\n' ' ')"
		run opt-log -C "$TMP/$p" verify
		assert_success
	done
	# both copies of a collection are the same commit as ours
	for c in c1 c2 c3; do
		for p in $(opt-sync where "$c" | jq -r '.peers[]'); do
			[ "$(git --git-dir="$TMP/$p" rev-parse "refs/opt/collections/$c")" = \
				"$(git --git-dir="$OPT_STORE" rev-parse "refs/opt/collections/$c")" ]
		done
	done
	# nothing new: all up to date
	run opt-sync push
	assert_success
	[ "$(grep -c '"status":"up-to-date"' <<<"$output")" -eq 40 ]
	# a new store with the same peers pulls every collection from the cluster
	opt-block init "$TMP/t" >/dev/null
	opt-log -C "$TMP/t" trust "$(key_of "$OPT_STORE")" --name s
	for p in p1 p2 p3; do opt-sync -C "$TMP/t" peer add "$p" "$TMP/$p"; done
	run opt-sync -C "$TMP/t" pull
	assert_success
	[ "$(grep -c '"status":"new"' <<<"$output")" -eq 20 ]
	# each from its home
	home=$(opt-sync where c5 | jq -r .home)
	assert_line "{\"remote\":\"$home\",\"collection\":\"c5\",\"rev\":1,\"status\":\"new\"}"
	[ "$(opt-tree -C "$TMP/t" get c5 k)" = '{"key":"k","value":5}' ]
	[ "$(colls_of "$TMP/t")" = "$(colls_of "$OPT_STORE")" ]
	# --cluster takes collections as operands
	opt-log trust "$(key_of "$TMP/t")" --name t
	opt-tree -C "$TMP/t" put c5 k 55 >/dev/null
	opt-tree -C "$TMP/t" put c6 k 66 >/dev/null
	run opt-sync -C "$TMP/t" push --cluster c5
	assert_success
	[ "$(grep -c '"status":"pushed"' <<<"$output")" -eq 2 ]
	refute_output --partial '"c6"'
	run opt-sync pull --cluster c5 c6
	assert_success
	assert_line --partial '"collection":"c5","rev":2,"status":"fast-forward"'
	assert_line --partial '"collection":"c6","rev":1,"status":"up-to-date"'
	run opt-sync push --cluster nosuch
	assert_failure 1
}

@test "a peer that is down is retried and reported; exit 5 only when a collection is short of peers" {
	make_peers 3
	make_colls 12
	mv "$TMP/p2" "$TMP/p2.away"
	run --separate-stderr opt-sync push --retries 2
	[ "$status" -eq 5 ] || fail "exit $status: $stderr"
	assert_line --partial '{"peer":"p2","status":"unreachable","attempts":3,"error":"cannot reach remote '"'p2'"
	[[ $stderr == *"reached fewer than 2 peers (unreachable: p2)"* ]] || fail "$stderr"
	# every collection placed on p2 is reported, none else
	for c in $(placed_on p2); do
		assert_line --partial "{\"remote\":\"p2\",\"collection\":\"$c\",\"status\":\"failed\""
	done
	n=$(placed_on p2 | wc -l)
	[ "$(grep -c '"status":"failed"' <<<"$output")" -eq "$n" ]
	[ "$(grep -c '"status":"under-replicated"\|"status":"home-unreachable"' <<<"$output")" -eq "$n" ]
	# a collection whose home is p2 waits for it: not pushed to its replicas
	for c in $(opt-sync where | jq -r 'select(.home == "p2") | .collection'); do
		assert_line --partial "{\"collection\":\"$c\",\"status\":\"home-unreachable\",\"reached\":0,\"required\":2"
		other=$(opt-sync where "$c" | jq -r '.peers[1]')
		! git --git-dir="$TMP/$other" rev-parse -q --verify "refs/opt/collections/$c" >/dev/null
	done
	# enough with one peer each, except those whose home is down
	homes_on_p2=$(opt-sync where | jq -r 'select(.home == "p2") | .collection' | wc -l)
	run opt-sync push --min 1 --retries 0
	if [ "$homes_on_p2" -gt 0 ]; then assert_failure 5; else assert_success; fi
	# promoted on purpose: the next peer acts as home
	run opt-sync push --min 1 --retries 0 --promote
	assert_success
	assert_output --partial '"down":["p2"],"short":0'
	# p2 is back: the next push completes every placement
	mv "$TMP/p2.away" "$TMP/p2"
	run opt-sync push
	assert_success
	for p in p1 p2 p3; do
		[ "$(colls_of "$TMP/$p")" = "$(placed_on "$p")" ] || fail "$p holds $(colls_of "$TMP/$p" | tr '\n' ' ')"
	done
}

@test "dry runs change nothing; the rebalance plan says what would move where" {
	make_peers 3
	make_colls 30
	run opt-sync push --dry-run
	assert_success
	[ "$(grep -c '"status":"pushed","dry_run":true' <<<"$output")" -eq 60 ]
	for p in p1 p2 p3; do [ -z "$(colls_of "$TMP/$p")" ]; done
	opt-sync push >/dev/null
	before=$(opt-sync where)
	opt-block init "$TMP/p4" >/dev/null
	opt-sync peer add p4 "$TMP/p4"
	after=$(opt-sync where)
	# only collections that now go to p4 change placement, p4 replacing one peer
	moved=$(diff <(echo "$before") <(echo "$after") | grep -c '^>' || true)
	[ "$moved" -gt 0 ] && [ "$moved" -lt 30 ]
	diff <(echo "$before") <(echo "$after") | grep '^>' | grep -q -v p4 && fail "a placement changed without p4"
	run opt-sync rebalance --dry-run
	assert_success
	plan=$(grep '"planned"' <<<"$output")
	[ "$(wc -l <<<"$plan")" -eq "$moved" ]
	[ "$(jq -r .collection <<<"$plan" | sort)" = "$(placed_on p4)" ]
	[ "$(jq -c '.to' <<<"$plan" | sort -u)" = '["p4"]' ]
	[ "$(jq -r .from <<<"$plan" | sort -u)" = local ]
	[ "$(grep -c '"misplaced"' <<<"$output")" -eq "$moved" ]
	[ -z "$(colls_of "$TMP/p4")" ]
	# the move: only those collections travel, onto p4
	run opt-sync rebalance
	assert_success
	[ "$(grep '"status":"pushed"' <<<"$output" | jq -r .collection | sort)" = "$(placed_on p4)" ]
	[ "$(grep '"status":"pushed"' <<<"$output" | jq -r .remote | sort -u)" = p4 ]
	[ "$(colls_of "$TMP/p4")" = "$(placed_on p4)" ]
	# nothing more to move
	run opt-sync rebalance
	assert_success
	refute_output --partial '"pushed"'
	# a peer leaves: only the collections it held move, each to one peer
	before=$(opt-sync where)
	held=$(placed_on p2)
	opt-sync peer rm p2
	run opt-sync rebalance
	assert_success
	# (a copy a peer kept from before, now in the placement again, stays)
	pushed=$(grep '"status":"pushed"' <<<"$output" | jq -r .collection | sort)
	[ -n "$pushed" ] && [ -z "$(comm -23 <(echo "$pushed") <(echo "$held"))" ]
	[ "$(diff <(echo "$before") <(opt-sync where) | grep -c '^>')" -eq "$(wc -l <<<"$held")" ]
	for p in p1 p3 p4; do
		[ "$(colls_of "$TMP/$p" | comm -12 - <(placed_on "$p"))" = "$(placed_on "$p")" ]
	done
	# a store that lacks a collection gets it from a peer first
	opt-block init "$TMP/t" >/dev/null
	opt-log -C "$TMP/t" trust "$(key_of "$OPT_STORE")" --name s
	for p in p1 p2 p3 p4; do opt-sync -C "$TMP/t" peer add "$p" "$TMP/$p"; done
	opt-block init "$TMP/p5" >/dev/null
	opt-log -C "$TMP/p5" trust "$(key_of "$OPT_STORE")" --name s
	opt-sync -C "$TMP/t" peer add p5 "$TMP/p5"
	run opt-sync -C "$TMP/t" rebalance
	assert_success
	[ "$(colls_of "$TMP/p5")" = "$(opt-sync -C "$TMP/t" where $(colls_of "$OPT_STORE") |
		jq -r 'select(.peers | index("p5")) | .collection' | sort)" ]
	run opt-log -C "$TMP/p5" verify
	assert_success
}

@test "replicas converge: later writes reach both peers, the home's order holds" {
	make_peers 3
	opt-diary append log '"one"' >/dev/null
	opt-sync push >/dev/null
	home=$(opt-sync where log | jq -r .home)
	rep=$(opt-sync where log | jq -r '.peers[1]')
	# another writer pushes to the home in between
	opt-block init "$TMP/w" >/dev/null
	opt-log -C "$TMP/w" trust "$(key_of "$OPT_STORE")" --name s
	opt-log trust "$(key_of "$TMP/w")" --name w
	opt-log -C "$TMP/$home" trust "$(key_of "$TMP/w")" --name w
	opt-log -C "$TMP/$rep" trust "$(key_of "$TMP/w")" --name w
	for p in p1 p2 p3; do opt-sync -C "$TMP/w" peer add "$p" "$TMP/$p"; done
	opt-sync -C "$TMP/w" pull >/dev/null
	opt-diary -C "$TMP/w" append log '"from w"' >/dev/null
	opt-sync -C "$TMP/w" push >/dev/null
	opt-diary append log '"two"' >/dev/null
	run opt-sync push
	assert_success
	assert_line "{\"remote\":\"$home\",\"collection\":\"log\",\"rev\":3,\"status\":\"replayed\",\"replayed\":1}"
	assert_line "{\"remote\":\"$rep\",\"collection\":\"log\",\"rev\":3,\"status\":\"pushed\"}"
	[ "$(git --git-dir="$TMP/$home" rev-parse refs/opt/collections/log)" = \
		"$(git --git-dir="$TMP/$rep" rev-parse refs/opt/collections/log)" ]
	run opt-diary -C "$TMP/$rep" read log --compact
	assert_output '"one"
"from w"
"two"'
}

@test "a peer over git daemon joins the cluster" {
	mkdir -p "$TMP/srv"
	opt-block init "$TMP/srv/g" >/dev/null
	start_daemon
	opt-block init "$TMP/p1" >/dev/null
	opt-sync peer add p1 "$TMP/p1"
	opt-sync peer add g "$GITURL/g"
	make_colls 6
	run opt-sync push
	assert_success
	[ "$(grep -c '"remote":"g".*"status":"pushed"' <<<"$output")" -eq 6 ]
	[ "$(colls_of "$TMP/srv/g")" = "$(colls_of "$OPT_STORE")" ]
	# the daemon stops: reported, retried, exit 5 (R=2: every collection is short)
	kill "${SERVER_PIDS[@]}"
	wait "${SERVER_PIDS[@]}" 2>/dev/null || true
	SERVER_PIDS=()
	opt-tree put c1 k 100 >/dev/null
	run --separate-stderr opt-sync push --retries 1
	assert_failure 5
	assert_line --partial '{"peer":"g","status":"unreachable","attempts":2'
	run opt-sync push --min 1 --promote
	assert_success
	assert_line --partial '"down":["g"],"short":0'
	[ "$(opt-tree -C "$TMP/p1" get c1 k)" = '{"key":"k","value":100}' ]
}

@test "git://: one connection per peer carries all its collections; a race lost at receive-pack is replayed" {
	mkdir -p "$TMP/srv"
	opt-block init "$TMP/srv/g" >/dev/null
	opt-log -C "$TMP/srv/g" trust "$(key_of "$OPT_STORE")" --name s
	start_daemon
	make_colls 8
	opt-sync peer add g "$GITURL/g"
	sleep 0.2
	: >"$TMP/daemon.log"
	run opt-sync push
	assert_success
	[ "$(grep -c '"status":"pushed"' <<<"$output")" -eq 8 ]
	sleep 0.2
	# one connection: a push of all 8 refs (the remote is where we last
	# saw it, so no fetch is needed first)
	[ "$(grep -c 'Connection from' "$TMP/daemon.log")" -eq 1 ] || fail "$(cat "$TMP/daemon.log")"
	# two writers change two collections each and push at once; the server
	# holds each push a second after its pack, so both pass the negotiation
	printf '#!/bin/sh\ncat >/dev/null\nsleep 1\n' >"$TMP/srv/g/hooks/pre-receive"
	chmod +x "$TMP/srv/g/hooks/pre-receive"
	local i
	for i in 1 2; do
		opt-sync clone "$GITURL/g" "$TMP/w$i" --trust "$(key_of "$OPT_STORE")" >/dev/null
	done
	for i in 1 2; do
		for n in srv/g w1 w2; do opt-log -C "$TMP/$n" trust "$(key_of "$TMP/w$i")" --name "w$i"; done
		opt-diary -C "$TMP/w$i" append d1 "\"w$i\"" >/dev/null
		opt-diary -C "$TMP/w$i" append d2 "\"w$i\"" >/dev/null
	done
	opt-sync -C "$TMP/w1" push origin d1 d2 >"$TMP/out1" &
	i=$!
	opt-sync -C "$TMP/w2" push origin d1 d2 >"$TMP/out2" &
	wait "$i" $!
	cat "$TMP/out1" "$TMP/out2" >"$TMP/out"
	run grep -c '"status":"pushed"' "$TMP/out"
	assert_output 2
	run grep -c '"status":"replayed","replayed":1' "$TMP/out"
	assert_output 2
	run opt-diary -C "$TMP/srv/g" count d1
	assert_output 2
	run opt-diary -C "$TMP/srv/g" count d2
	assert_output 2
	run opt-log -C "$TMP/srv/g" verify
	assert_success
}

@test "git://: connections: a first push two per peer (it orders and replicates new writes), an incremental push and a pull one per peer" {
	mkdir -p "$TMP/srv"
	local p
	for p in g1 g2 g3; do
		opt-block init "$TMP/srv/$p" >/dev/null
		opt-log -C "$TMP/srv/$p" trust "$(key_of "$OPT_STORE")" --name s
	done
	start_daemon
	for p in g1 g2 g3; do opt-sync peer add "$p" "$GITURL/$p"; done
	make_colls 12
	conns() { sleep 0.3; grep -c 'Connection from' "$TMP/daemon.log" || true; : >"$TMP/daemon.log"; }
	sleep 0.2
	: >"$TMP/daemon.log"
	# each peer is the home of new writes and a replica of another home's:
	# its replicas wait for its home's answer (docs/clusters.md)
	run opt-sync push
	assert_success
	[ "$(grep -c '"status":"pushed"' <<<"$output")" -eq 24 ]
	assert_line --partial '"sessions":6,'
	[ "$(conns)" -eq 6 ]
	# one collection changed: its home first, with whatever else that peer
	# holds; then the other peers, its replica among them: one each
	opt-tree put c1 k 100 >/dev/null
	run opt-sync push
	assert_success
	[ "$(grep -c '"status":"pushed"' <<<"$output")" -eq 2 ]
	[ "$(grep -c '"status":"up-to-date"' <<<"$output")" -eq 22 ]
	assert_line --partial '"sessions":3,'
	[ "$(conns)" -eq 3 ]
	for p in $(opt-sync where c1 | jq -r '.peers[]'); do
		[ "$(git --git-dir="$TMP/srv/$p" rev-parse refs/opt/collections/c1)" = \
			"$(git --git-dir="$OPT_STORE" rev-parse refs/opt/collections/c1)" ]
	done
	# nothing changed: one each
	run opt-sync push
	assert_success
	[ "$(conns)" -eq 3 ]
	# a pull lists each peer and takes what it is the home of over the
	# same connection
	opt-block init "$TMP/t" >/dev/null
	opt-log -C "$TMP/t" trust "$(key_of "$OPT_STORE")" --name s
	for p in g1 g2 g3; do opt-sync -C "$TMP/t" peer add "$p" "$GITURL/$p"; done
	: >"$TMP/daemon.log"
	run opt-sync -C "$TMP/t" pull
	assert_success
	[ "$(grep -c '"status":"new"' <<<"$output")" -eq 12 ]
	assert_line --partial '"sessions":3,'
	[ "$(conns)" -eq 3 ]
	home=$(opt-sync where c1 | jq -r .home)
	assert_line "{\"remote\":\"$home\",\"collection\":\"c1\",\"rev\":2,\"status\":\"new\"}"
	[ "$(opt-tree -C "$TMP/t" get c1 k)" = '{"key":"k","value":100}' ]
	# a home that lost a collection: its replica gives it, over one more
	# connection
	git --git-dir="$TMP/srv/$home" update-ref -d refs/opt/collections/c1
	opt-block init "$TMP/t2" >/dev/null
	opt-log -C "$TMP/t2" trust "$(key_of "$OPT_STORE")" --name s
	for p in g1 g2 g3; do opt-sync -C "$TMP/t2" peer add "$p" "$GITURL/$p"; done
	: >"$TMP/daemon.log"
	run opt-sync -C "$TMP/t2" pull
	assert_success
	assert_line "{\"remote\":\"$(opt-sync where c1 | jq -r '.peers[1]')\",\"collection\":\"c1\",\"rev\":2,\"status\":\"new\"}"
	[ "$(grep -c '"status":"new"' <<<"$output")" -eq 12 ]
	[ "$(conns)" -eq 4 ]
}

@test "a second writer racing cluster pushes: homes and replicas end identical, nothing lost or doubled" {
	make_peers 3
	opt-block init "$TMP/w" >/dev/null
	opt-log -C "$TMP/w" trust "$(key_of "$OPT_STORE")" --name s
	opt-log trust "$(key_of "$TMP/w")" --name w
	local p i
	for p in p1 p2 p3; do
		opt-log -C "$TMP/$p" trust "$(key_of "$TMP/w")" --name w
		opt-sync -C "$TMP/w" peer add "$p" "$TMP/$p"
	done
	opt-diary append log '"start"' >/dev/null
	opt-tree put t k0 0 >/dev/null
	opt-sync push >/dev/null
	opt-sync -C "$TMP/w" pull >/dev/null
	writer() {
		local s=$1 i
		for i in $(seq 8); do
			opt-diary -C "$s" append log "\"$2$i\"" >/dev/null
			opt-tree -C "$s" put t "$2$i" "$i" >/dev/null
			opt-sync -C "$s" push >"$TMP/out.$2.$i" 2>&1 || { echo "push $2$i: exit $?" >>"$TMP/fail"; cat "$TMP/out.$2.$i" >>"$TMP/fail"; }
		done
	}
	writer "$OPT_STORE" s &
	i=$!
	writer "$TMP/w" w &
	wait "$i" $!
	[ ! -e "$TMP/fail" ] || fail "$(cat "$TMP/fail")"
	# each writer's last push left the home and the replicas equal
	for c in log t; do
		home=$(opt-sync where "$c" | jq -r .home)
		rep=$(opt-sync where "$c" | jq -r '.peers[1]')
		[ "$(git --git-dir="$TMP/$home" rev-parse "refs/opt/collections/$c")" = \
			"$(git --git-dir="$TMP/$rep" rev-parse "refs/opt/collections/$c")" ] || fail "$c: $home and $rep differ"
		run opt-diary -C "$TMP/$rep" count log
		[ "$c" != log ] || assert_output 17
		run opt-log -C "$TMP/$rep" verify
		assert_success
	done
	run opt-tree -C "$TMP/$(opt-sync where t | jq -r '.peers[1]')" count t
	assert_output 17
	# every write once, in the home's order, everywhere after a pull
	for s in "$OPT_STORE" "$TMP/w"; do
		opt-sync -C "$s" pull >/dev/null
		run opt-diary -C "$s" count log
		assert_output 17
		[ "$(git --git-dir="$s" rev-parse refs/opt/collections/log)" = \
			"$(git --git-dir="$TMP/$(opt-sync where log | jq -r .home)" rev-parse refs/opt/collections/log)" ]
	done
	[ "$(opt-diary read log --compact | sort | uniq -d)" = "" ]
}

@test "git://: while a cluster push waits for the home, a local write and another writer's push: the replica takes only what the home took" {
	mkdir -p "$TMP/srv"
	opt-block init "$TMP/w" >/dev/null
	opt-log -C "$TMP/w" trust "$(key_of "$OPT_STORE")" --name s
	opt-log trust "$(key_of "$TMP/w")" --name w
	local p
	for p in g1 g2; do
		opt-block init "$TMP/srv/$p" >/dev/null
		opt-log -C "$TMP/srv/$p" trust "$(key_of "$OPT_STORE")" --name s
		opt-log -C "$TMP/srv/$p" trust "$(key_of "$TMP/w")" --name w
	done
	start_daemon
	for p in g1 g2; do
		opt-sync peer add "$p" "$GITURL/$p"
		opt-sync -C "$TMP/w" peer add "$p" "$GITURL/$p"
	done
	opt-diary append log '"start"' >/dev/null
	opt-sync push >/dev/null
	opt-sync -C "$TMP/w" pull >/dev/null
	home=$(opt-sync where log | jq -r .home)
	rep=$(opt-sync where log | jq -r '.peers[1]')
	# the home holds each push a second after its pack
	printf '#!/bin/sh\ntouch "%s"\ncat >/dev/null\nsleep 1\n' "$TMP/held" >"$TMP/srv/$home/hooks/pre-receive"
	chmod +x "$TMP/srv/$home/hooks/pre-receive"
	opt-diary append log '"s1"' >/dev/null
	opt-diary -C "$TMP/w" append log '"w1"' >/dev/null
	opt-sync push >"$TMP/out.s" 2>&1 &
	local ps=$! i
	# our push is at the home: write here meanwhile
	for i in $(seq 100); do [ -e "$TMP/held" ] && break; sleep 0.1; done
	[ -e "$TMP/held" ] || fail "the push did not reach the home"
	opt-diary append log '"s2"' >/dev/null
	opt-sync -C "$TMP/w" push >"$TMP/out.w" 2>&1 || fail "w: $(cat "$TMP/out.w")"
	wait "$ps" || fail "s: $(cat "$TMP/out.s")"
	# home and replica agree, and neither has s2: the home never took it
	[ "$(git --git-dir="$TMP/srv/$home" rev-parse refs/opt/collections/log)" = \
		"$(git --git-dir="$TMP/srv/$rep" rev-parse refs/opt/collections/log)" ] || fail "$(cat "$TMP/out.s" "$TMP/out.w")"
	run opt-diary -C "$TMP/srv/$rep" read log --compact
	refute_output --partial '"s2"'
	assert_line '"s1"'
	assert_line '"w1"'
	# the next push brings s2 to both, after what the home ordered
	run opt-sync push
	assert_success
	for p in g1 g2; do
		run opt-diary -C "$TMP/srv/$p" count log
		assert_output 4
		run opt-log -C "$TMP/srv/$p" verify log
		assert_success
	done
	[ "$(git --git-dir="$TMP/srv/$home" rev-parse refs/opt/collections/log)" = \
		"$(git --git-dir="$TMP/srv/$rep" rev-parse refs/opt/collections/log)" ]
	opt-sync -C "$TMP/w" pull >/dev/null
	[ "$(opt-diary -C "$TMP/w" read log --compact | sort | uniq -d)" = "" ]
	[ "$(git --git-dir="$TMP/w" rev-parse refs/opt/collections/log)" = \
		"$(git --git-dir="$TMP/srv/$home" rev-parse refs/opt/collections/log)" ]
}

@test "a multi-collection transaction over two homes: the sessions of one push do not replay it against each other" {
	make_peers 2
	local b i
	two_writers_two_homes
	txn k0 | opt-log commit >/dev/null
	opt-sync push >/dev/null
	opt-sync -C "$TMP/w" pull >/dev/null
	for i in 1 2 3; do
		# another writer moved both homes; we wrote one transaction over both
		opt-tree -C "$TMP/w" put a "w$i" 1 >/dev/null
		opt-tree -C "$TMP/w" put "$b" "w$i" 1 >/dev/null
		opt-sync -C "$TMP/w" push >/dev/null
		txn "s$i" | opt-log commit >/dev/null
		run --separate-stderr opt-sync push
		assert_success
		refute_output --partial '"status":"failed"'
		for c in a "$b"; do
			for p in p1 p2; do
				[ "$(git --git-dir="$TMP/$p" rev-parse "refs/opt/collections/$c")" = \
					"$(git --git-dir="$OPT_STORE" rev-parse "refs/opt/collections/$c")" ] || fail "round $i: $c on $p"
			done
		done
	done
	for c in a "$b"; do
		run opt-tree count "$c"
		assert_output 7
		run opt-log -C "$TMP/p1" verify "$c"
		assert_success
	done
	opt-sync -C "$TMP/w" pull >/dev/null
	[ "$(git --git-dir="$TMP/w" rev-parse refs/opt/collections/a)" = "$(git --git-dir="$OPT_STORE" rev-parse refs/opt/collections/a)" ]
}

@test "a diverged replica is repaired by replay, never overwritten; a replica ahead is taken" {
	make_peers 2
	opt-diary append log '"one"' >/dev/null
	opt-sync push >/dev/null
	home=$(opt-sync where log | jq -r .home)
	rep=$(opt-sync where log | jq -r '.peers[1]')
	opt-log trust "$(key_of "$TMP/$rep")" --name rep
	opt-log -C "$TMP/$home" trust "$(key_of "$TMP/$rep")" --name rep
	# someone wrote to the replica directly, and we wrote too
	opt-diary -C "$TMP/$rep" append log '"on the replica"' >/dev/null
	opt-diary append log '"two"' >/dev/null
	run opt-sync push --dry-run
	assert_success
	assert_line "{\"remote\":\"$rep\",\"collection\":\"log\",\"rev\":2,\"status\":\"repaired\",\"dry_run\":true}"
	[ "$(opt-diary -C "$TMP/$rep" count log)" = 2 ]
	run opt-sync push
	assert_success
	# the home's order: ours first, then the replica's write replayed on it,
	# which goes to the home too
	assert_line "{\"remote\":\"$home\",\"collection\":\"log\",\"rev\":2,\"status\":\"pushed\"}"
	assert_line "{\"remote\":\"$rep\",\"collection\":\"log\",\"rev\":3,\"status\":\"repaired\",\"replayed\":1}"
	assert_line "{\"remote\":\"$home\",\"collection\":\"log\",\"rev\":3,\"status\":\"pushed\"}"
	for s in "$OPT_STORE" "$TMP/$home" "$TMP/$rep"; do
		run opt-diary -C "$s" read log --compact
		assert_output '"one"
"two"
"on the replica"'
		[ "$(git --git-dir="$s" rev-parse refs/opt/collections/log)" = \
			"$(git --git-dir="$OPT_STORE" rev-parse refs/opt/collections/log)" ]
		run opt-log -C "$s" verify log
		assert_success
	done
	# converged: nothing moves any more
	run opt-sync push
	assert_success
	[ "$(grep -c '"status":"up-to-date"' <<<"$output")" -eq 2 ]
	# a replica ahead of us: we take it, then its home does
	opt-diary -C "$TMP/$rep" append log '"replica again"' >/dev/null
	run opt-sync push
	assert_success
	assert_line "{\"remote\":\"$rep\",\"collection\":\"log\",\"rev\":4,\"status\":\"fast-forward\"}"
	assert_line "{\"remote\":\"$home\",\"collection\":\"log\",\"rev\":4,\"status\":\"pushed\"}"
	[ "$(opt-diary -C "$TMP/$home" count log)" = 4 ]
	[ "$(opt-diary count log)" = 4 ]
}

# What bash completion offers for the words "$@" (the last is completed).
bash_offers() {
	(
		# shellcheck disable=SC1091
		source "$TOP/completions/opt.bash"
		COMP_WORDS=("$@")
		COMP_CWORD=$(($# - 1))
		_opt_complete
		printf '%s\n' "${COMPREPLY[@]}"
	)
}

@test "completions: the cluster's commands and options; where completes collection names" {
	opt-tree put users k 1 >/dev/null
	opt-tree put user/archive k 1 >/dev/null
	run bash_offers opt-sync ''
	for v in peer replicas where rebalance; do assert_line "$v"; done
	run bash_offers opt-sync push --
	for o in --cluster --min= --retries= --promote; do assert_line -- "$o"; done
	run bash_offers opt-sync rebalance --
	assert_line --index 0 -- --dry-run
	assert_line --index 1 -- --retries=
	run bash_offers opt-sync where us
	assert_output $'user/archive\nusers'
	if command -v zsh >/dev/null; then
		run zsh -f -c "source '$TOP/completions/opt.zsh'; words=(opt-sync where u); CURRENT=3; _opt_analyse; print -r -- \$_opt_kind:\${(j: :)_opt_cands}"
		assert_output 'collection:user/archive users'
	fi
	if command -v fish >/dev/null; then
		sed "s/@PROG@/opt-sync/g" "$TOP/completions/opt.fish" >"$TMP/opt-sync.fish"
		run fish --no-config -c "source '$TMP/opt-sync.fish'; complete -C 'opt-sync where '"
		assert_output $'user/archive\nusers'
		run fish --no-config -c "source '$TMP/opt-sync.fish'; complete -C 'opt-sync '"
		for v in peer replicas where rebalance; do assert_line --partial "$v"; done
	fi
}

@test "rebalance from a store that cannot verify what it lacks moves none of it (exit 4)" {
	make_peers 2
	make_colls 6
	opt-sync push >/dev/null
	# t trusts nobody (restricted to its own key): it can list the peers
	# but not take their collections
	opt-block init "$TMP/t" >/dev/null
	opt-log -C "$TMP/t" restrict >/dev/null
	for p in p1 p2; do opt-sync -C "$TMP/t" peer add "$p" "$TMP/$p"; done
	opt-block init "$TMP/p3" >/dev/null
	opt-sync -C "$TMP/t" peer add p3 "$TMP/p3"
	run --separate-stderr opt-sync -C "$TMP/t" rebalance
	assert_failure 4
	[[ $stderr == *"does not trust"* ]] || fail "$stderr"
	assert_line --partial '"remote":"p3","collection":"c'
	assert_line --partial '"status":"failed","error":"no reachable peer holding it could give it"'
	[ -z "$(colls_of "$TMP/p3")" ]
	[ -z "$(colls_of "$TMP/t")" ]
}

@test "rebalance --prune removes copies outside their placement, never one holding writes we lack" {
	make_peers 3
	make_colls 12
	opt-sync push >/dev/null
	opt-block init "$TMP/p4" >/dev/null
	opt-log -C "$TMP/p4" trust "$(key_of "$OPT_STORE")" --name s
	opt-sync peer add p4 "$TMP/p4"
	opt-sync rebalance >/dev/null
	mis=$(opt-sync rebalance --dry-run | jq -r 'select(.status == "misplaced") | .remote + " " + .collection')
	[ -n "$mis" ]
	# one misplaced copy took a write of its own
	read -r kp kc <<<"$(head -n 1 <<<"$mis")"
	opt-tree -C "$TMP/$kp" put "$kc" own 1 >/dev/null
	opt-log trust "$(key_of "$TMP/$kp")" --name "$kp"
	run opt-sync rebalance --prune
	assert_success
	assert_line "{\"remote\":\"$kp\",\"collection\":\"$kc\",\"status\":\"kept\",\"reason\":\"it holds revisions this store lacks\"}"
	[ "$(grep -c '"status":"removed"' <<<"$output")" -eq "$(($(wc -l <<<"$mis") - 1))" ]
	for p in p1 p2 p3 p4; do
		want=$(placed_on "$p")
		[ "$p" = "$kp" ] && want=$(printf '%s\n%s\n' "$want" "$kc" | sort)
		[ "$(colls_of "$TMP/$p")" = "$want" ] || fail "$p holds $(colls_of "$TMP/$p" | tr '\n' ' ')"
	done
	# once we have that write, the copy goes too
	opt-sync pull "$kp" "$kc" >/dev/null
	for p in p1 p2 p3 p4; do opt-log -C "$TMP/$p" trust "$(key_of "$TMP/$kp")" --name "$kp"; done
	run opt-sync rebalance --prune
	assert_success
	assert_line "{\"remote\":\"$kp\",\"collection\":\"$kc\",\"status\":\"removed\"}"
	[ "$(colls_of "$TMP/$kp")" = "$(placed_on "$kp")" ]
	[ "$(opt-tree get "$kc" own)" = '{"key":"own","value":1}' ]
	# and the write reached the collection's placement
	for p in $(opt-sync where "$kc" | jq -r '.peers[]'); do
		[ "$(opt-tree -C "$TMP/$p" get "$kc" own)" = '{"key":"own","value":1}' ]
	done
}

@test "git://: rebalance --prune removes a misplaced copy at receive-pack by compare-and-swap" {
	mkdir -p "$TMP/srv"
	opt-block init "$TMP/srv/g" >/dev/null
	opt-log -C "$TMP/srv/g" trust "$(key_of "$OPT_STORE")" --name s
	start_daemon
	opt-sync peer add g "$GITURL/g"
	make_peers 2
	make_colls 20
	opt-sync push >/dev/null
	[ "$(colls_of "$TMP/srv/g")" = "$(placed_on g)" ]
	before=$(placed_on g)
	opt-block init "$TMP/p3" >/dev/null
	opt-sync peer add p3 "$TMP/p3"
	# (with these names, some of g's collections move to p3)
	[ "$(placed_on g)" != "$before" ]
	run opt-sync rebalance --prune
	assert_success
	for c in $(comm -23 <(echo "$before") <(placed_on g)); do
		assert_line "{\"remote\":\"g\",\"collection\":\"$c\",\"status\":\"removed\"}"
	done
	for p in srv/g p1 p2 p3; do
		[ "$(colls_of "$TMP/$p")" = "$(placed_on "${p#srv/}")" ] || fail "$p holds $(colls_of "$TMP/$p" | tr '\n' ' ')"
	done
	# its tracking ref went with it
	[ -z "$(git --git-dir="$OPT_STORE" for-each-ref --format='%(refname)' "refs/opt/remotes/g/" |
		grep -v -x -F -f <(placed_on g | sed 's|^|refs/opt/remotes/g/|'))" ]
}

@test "a cluster pull takes a multi-collection transaction whole, even when only one home holds it" {
	make_peers 2
	local b
	two_writers_two_homes
	txn k0 | opt-log commit >/dev/null
	opt-sync push >/dev/null
	opt-sync -C "$TMP/w" pull >/dev/null
	# the other writer's transaction reached only $b's home (the primary's:
	# the last in name order), as when a's home is down during its push
	txn k1 | opt-log -C "$TMP/w" commit >/dev/null
	opt-sync -C "$TMP/w" push "$(opt-sync where "$b" | jq -r .home)" "$b" >/dev/null
	run opt-sync pull
	assert_success
	# both halves, or neither
	[ "$(opt-tree get a k1 | jq -c .)" = "$(opt-tree get "$b" k1 | jq -c .)" ] ||
		fail "half a transaction: a: $(opt-tree get a k1) $b: $(opt-tree get "$b" k1)"
	run opt-tree get a k1
	assert_success
}

@test "a cluster pull from a home that gives what this store refuses: exit 4, that collection skipped (untrusted), the others pulled, the home not called unreachable" {
	make_peers 2
	opt-block init "$TMP/w" >/dev/null
	opt-log -C "$TMP/w" trust "$(key_of "$OPT_STORE")" --name s
	local p c home
	for p in p1 p2; do
		opt-log -C "$TMP/$p" trust "$(key_of "$TMP/w")" --name w
		opt-sync -C "$TMP/w" peer add "$p" "$TMP/$p"
	done
	make_colls 6
	opt-sync push >/dev/null
	opt-sync -C "$TMP/w" pull >/dev/null
	# a writer this store does not trust (it restricts its writers) wrote
	# c1 at its home
	opt-log restrict >/dev/null
	home=$(opt-sync where c1 | jq -r .home)
	opt-tree -C "$TMP/w" put c1 k 2 >/dev/null
	opt-sync -C "$TMP/w" push "$home" c1 >/dev/null
	run --separate-stderr opt-sync pull
	assert_failure 4
	[[ "$stderr" == *"does not trust"* ]] || fail "$stderr"
	refute_output --partial '"status":"unreachable"'
	assert_output --partial '"down":[]'
	# the refused collection is reported (why: untrusted) and taken from
	# nowhere else; the home's other collections carry on
	assert_line --partial "{\"remote\":\"$home\",\"collection\":\"c1\",\"status\":\"skipped\""
	assert_line --regexp "\"collection\":\"c1\",\"status\":\"skipped\".*\"reason\":\"untrusted\""
	for c in $(placed_on "$home"); do
		[ "$(opt-sync where "$c" | jq -r .home)" = "$home" ] && [ "$c" != c1 ] || continue
		assert_line --partial "{\"remote\":\"$home\",\"collection\":\"$c\",\"rev\":"
	done
	run opt-tree get c1 k
	assert_output '{"key":"k","value":1}'
}

@test "a copy outside a collection's placement (a multi-collection transaction carried it) does not count toward --min: exit 5" {
	make_peers 3
	local a b q rep
	a=a
	q=$(opt-sync where a | jq -r '["p1","p2","p3"] - .peers | .[0]')
	rep=$(opt-sync where a | jq -r '.peers[1]')
	# b is placed on q, the peer a is not placed on
	for b in b c d e f g h i j k; do
		[ "$(opt-sync where "$b" | jq --arg p "$q" '.peers | index($p)')" != null ] && break
	done
	echo "{\"collections\":{\"a\":[{\"type\":\"put\",\"key\":\"k\",\"value\":1}],\"$b\":[{\"type\":\"put\",\"key\":\"k\",\"value\":1}]}}" |
		opt-log commit >/dev/null
	mv "$TMP/$rep" "$TMP/$rep.away"
	run --separate-stderr opt-sync push --retries 0
	mv "$TMP/$rep.away" "$TMP/$rep"
	[ "$status" -eq 5 ] || fail "exit $status: $output $stderr"
	assert_line --partial '{"collection":"a","status":"under-replicated","reached":1,"required":2'
}

@test "a cluster pull with a transaction of ours over two homes that both moved: the sessions do not replay it against each other" {
	make_peers 2
	local b n
	two_writers_two_homes
	txn k0 | opt-log commit >/dev/null
	opt-sync push >/dev/null
	opt-sync -C "$TMP/w" pull >/dev/null
	for n in 1 2 3; do
		txn "w$n" | opt-log -C "$TMP/w" commit >/dev/null
		opt-sync -C "$TMP/w" push >/dev/null
		txn "s$n" | opt-log commit >/dev/null
		run --separate-stderr opt-sync pull
		[ "$status" -eq 0 ] || fail "round $n: exit $status: $output $stderr"
		refute_output --partial '"status":"failed"'
		run opt-tree count a
		assert_output $((1 + 2 * n))
		run opt-tree count "$b"
		assert_output $((1 + 2 * n))
		opt-sync push >/dev/null
		opt-sync -C "$TMP/w" pull >/dev/null
	done
	run opt-log verify a
	assert_success
}
