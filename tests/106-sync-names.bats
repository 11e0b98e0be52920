#!/usr/bin/env bats
# opt-sync and collection names: a remote's ref whose name is not a
# collection name (written at the peer with plain git or as a file), or
# one that clashes with a collection here ('a' there, 'a/b' here), is
# skipped and reported; every other collection is pulled; the exit status
# says something was skipped.  A skipped collection's tracking ref never
# moves.  Over a path and over git daemon.

load test_helper
load sync_helper
load servers

# Serve the stores under $TMP/srv with git daemon; sets GITURL.
start_git_daemon() {
	local port tries
	command -v git >/dev/null || skip "git is not installed"
	[ -x "$(git --exec-path)/git-daemon" ] || skip "git daemon is not available"
	mkdir -p "$TMP/srv"
	for tries in 1 2 3; do
		port=$(free_port) || skip "no free port"
		git daemon --reuseaddr --listen=127.0.0.1 --port="$port" --base-path="$TMP/srv" --export-all \
			--informative-errors "$TMP/srv" >"$TMP/daemon.log" 2>&1 &
		SERVER_PIDS+=($!)
		if wait_port "$port"; then
			GITURL="git://127.0.0.1:$port"
			ignore_libgit2_leaks
			return 0
		fi
	done
	skip "git daemon did not start: $(cat "$TMP/daemon.log")"
}

# The peer $1: a tree 'users', a diary 'zeta', a tree 'a'.
peer() {
	opt-block init "$1" >/dev/null
	opt-tree -C "$1" put users alice 1 >/dev/null
	opt-diary -C "$1" append zeta '"z1"' >/dev/null
	opt-tree -C "$1" put a k 1 >/dev/null
}

# The local store $1, trusting peer $2, with remote origin at URL $3.
local_of() {
	opt-block init "$1" >/dev/null
	trust_all "$1" "$2"
	opt-sync -C "$1" remote add origin "$3"
}

# Ref file refs/opt/collections/$2 of store $1 (a name git refuses too),
# pointing where 'users' points.
odd_ref() {
	mkdir -p "$1/refs/opt/collections/$(dirname "$2")"
	git --git-dir="$1" rev-parse refs/opt/collections/users >"$1/refs/opt/collections/$2"
}

# Records of the last run with status "skipped", as "NAME" lines, sorted.
skipped() { jq -r 'select(.status == "skipped") | .collection' <<<"$output" | sort; }

# The tracking ref of remote origin for collection $2 in store $1 (empty
# when there is none).
tracking() { git --git-dir="$1" rev-parse -q --verify "refs/opt/remotes/origin/$2" || true; }
head_of() { git --git-dir="$1" rev-parse -q --verify "refs/opt/collections/$2" || true; }

@test "path: refs whose names are no collection names are skipped and reported (exit 4); the rest is pulled" {
	peer "$TMP/p"
	local_of "$TMP/l" "$TMP/p" "$TMP/p"
	run opt-sync -C "$TMP/l" pull
	assert_success
	# names git refuses as refs, written as files; names git takes and we do not
	odd_ref "$TMP/p" 'x~1'
	odd_ref "$TMP/p" 'a..b'
	odd_ref "$TMP/p" 'x:y'
	odd_ref "$TMP/p" 'x y'
	odd_ref "$TMP/p" 'a.'
	odd_ref "$TMP/p" $'t\tab'
	odd_ref "$TMP/p" $'\xff'
	# outside the collections: not ours to report, but libgit2 would not list the peer
	mkdir -p "$TMP/p/refs/heads"
	git --git-dir="$TMP/p" rev-parse refs/opt/collections/users >"$TMP/p/refs/heads/x~1"
	git --git-dir="$TMP/p" update-ref refs/opt/collections/-x refs/opt/collections/users
	git --git-dir="$TMP/p" update-ref refs/opt/collections/q/x+y refs/opt/collections/users
	opt-tree -C "$TMP/p" put users bob 2 >/dev/null
	opt-diary -C "$TMP/p" append zeta '"z2"' >/dev/null
	opt-tree -C "$TMP/p" put b k 1 >/dev/null
	run --separate-stderr opt-sync -C "$TMP/l" pull
	assert_failure 4
	assert_equal "$(skipped)" "$(printf '%s\n' '-x' '\xff' 'a.' 'a..b' 'q/x+y' 't\x09ab' 'x y' 'x:y' 'x~1' | sort)"
	assert_line '{"remote":"origin","collection":"users","rev":2,"status":"fast-forward"}'
	assert_line '{"remote":"origin","collection":"zeta","rev":2,"status":"fast-forward"}'
	assert_line '{"remote":"origin","collection":"b","rev":1,"status":"new"}'
	assert_line '{"remote":"origin","collection":"a","rev":1,"status":"up-to-date"}'
	assert_line --partial '{"remote":"origin","collection":"x~1","status":"skipped","error":"invalid collection name '\''x~1'\'': '\''~'\'' is not allowed'
	# one line on stderr, naming one of them and counting the others
	[ "$(wc -l <<<"$stderr")" -eq 1 ] || fail "$stderr"
	[[ $stderr == "opt-sync: remote 'origin': 9 collections skipped, first '-x': invalid collection name '-x': a component begins with '-'"* ]] || fail "$stderr"
	[ "$(opt-tree -C "$TMP/l" range users)" = "$(opt-tree -C "$TMP/p" range users)" ]
	[ "$(opt-diary -C "$TMP/l" read zeta)" = "$(opt-diary -C "$TMP/p" read zeta)" ]
	# nothing of the odd ones here: no collection, no tracking ref
	run git --git-dir="$TMP/l" for-each-ref --format='%(refname)' refs/opt/collections/ refs/opt/remotes/
	assert_output 'refs/opt/collections/a
refs/opt/collections/b
refs/opt/collections/users
refs/opt/collections/zeta
refs/opt/remotes/origin/a
refs/opt/remotes/origin/b
refs/opt/remotes/origin/users
refs/opt/remotes/origin/zeta'
	# fetch says the same; a named collection is pulled without a word about them
	run --separate-stderr opt-sync -C "$TMP/l" fetch
	assert_failure 4
	[ "$(skipped | wc -l)" -eq 9 ]
	opt-tree -C "$TMP/p" put users carol 3 >/dev/null
	run --separate-stderr opt-sync -C "$TMP/l" pull origin users
	assert_success
	assert_output '{"remote":"origin","collection":"users","rev":3,"status":"fast-forward"}'
	# push works too (the peer's odd refs are not ours to judge there)
	opt-log -C "$TMP/p" trust "$(key_of "$TMP/l")" --name l
	opt-tree -C "$TMP/l" put users dave 4 >/dev/null
	run --separate-stderr opt-sync -C "$TMP/l" push origin users
	assert_success
	assert_output '{"remote":"origin","collection":"users","rev":4,"status":"pushed"}'
	fsck_ok "$TMP/l"
	run opt-log -C "$TMP/l" verify
	assert_success
	# the view of the peer is gone
	[ -z "$(ls -d "$TMP/l"/opt-peer.* 2>/dev/null)" ]
}

@test "path: a clone of a peer with an odd ref keeps what it could take (exit 4)" {
	peer "$TMP/p"
	odd_ref "$TMP/p" 'x~1'
	cd "$TMP"
	run --separate-stderr opt-sync clone "$TMP/p" c
	assert_failure 4
	assert_output '{"remote":"origin","collection":"a","rev":1,"status":"new"}
{"remote":"origin","collection":"users","rev":1,"status":"new"}
{"remote":"origin","collection":"x~1","status":"skipped","error":"invalid collection name '\''x~1'\'': '\''~'\'' is not allowed (use letters, digits, '\''.'\'', '\''_'\'', '\''-'\'' and '\''/'\'')","reason":"malformed"}
{"remote":"origin","collection":"zeta","rev":1,"status":"new"}'
	rm "$TMP/p/refs/opt/collections/x~1"
	[ "$(content_of c)" = "$(content_of "$TMP/p")" ]
	fsck_ok c
	# no view of the peer is left behind in the store
	[ -z "$(ls -d c/opt-peer.* 2>/dev/null)" ]
}

@test "path: a collection that clashes with one here is skipped (exit 3), the others fast-forward, its tracking ref never moves" {
	peer "$TMP/p"
	opt-tree -C "$TMP/p" put p/q k 1 >/dev/null
	local_of "$TMP/l" "$TMP/p" "$TMP/p"
	run opt-sync -C "$TMP/l" pull origin users zeta
	assert_success
	# here: 'a/b' (the peer has 'a') and 'p' (the peer has 'p/q')
	opt-tree -C "$TMP/l" put a/b k 1 >/dev/null
	opt-tree -C "$TMP/l" put p k 1 >/dev/null
	opt-tree -C "$TMP/p" put users bob 2 >/dev/null
	opt-diary -C "$TMP/p" append zeta '"z2"' >/dev/null
	run --separate-stderr opt-sync -C "$TMP/l" pull
	assert_failure 3
	assert_output '{"remote":"origin","collection":"a","status":"skipped","error":"collection '\''a'\'' cannot be created: collection '\''a/b'\'' exists","reason":"conflict"}
{"remote":"origin","collection":"p/q","status":"skipped","error":"collection '\''p/q'\'' cannot be created: collection '\''p'\'' exists","reason":"conflict"}
{"remote":"origin","collection":"users","rev":2,"status":"fast-forward"}
{"remote":"origin","collection":"zeta","rev":2,"status":"fast-forward"}'
	[[ $stderr == "opt-sync: remote 'origin': 2 collections skipped, first 'a': collection 'a' cannot be created: collection 'a/b' exists" ]] || fail "$stderr"
	[ -z "$(tracking "$TMP/l" a)" ] && [ -z "$(tracking "$TMP/l" p/q)" ]
	# the tracking refs that moved are those of collections that moved
	[ "$(tracking "$TMP/l" users)" = "$(head_of "$TMP/l" users)" ]
	[ "$(tracking "$TMP/l" zeta)" = "$(head_of "$TMP/l" zeta)" ]
	[ "$(head_of "$TMP/l" users)" = "$(head_of "$TMP/p" users)" ]
	[ "$(head_of "$TMP/l" zeta)" = "$(head_of "$TMP/p" zeta)" ]
	# the local ones are untouched and still take writes
	run opt-tree -C "$TMP/l" put a/b k 2
	assert_success
	# --dry-run says the same and changes nothing
	run --separate-stderr opt-sync -C "$TMP/l" pull --dry-run
	assert_failure 3
	assert_line '{"remote":"origin","collection":"a","status":"skipped","error":"collection '\''a'\'' cannot be created: collection '\''a/b'\'' exists","reason":"conflict","dry_run":true}'
	# naming it: the same record and status
	run --separate-stderr opt-sync -C "$TMP/l" pull origin a
	assert_failure 3
	assert_output '{"remote":"origin","collection":"a","status":"skipped","error":"collection '\''a'\'' cannot be created: collection '\''a/b'\'' exists","reason":"conflict"}'
	fsck_ok "$TMP/l"
	run opt-log -C "$TMP/l" verify
	assert_success
}

@test "path: a transaction is taken whole or not at all: a collection that shares one with a skipped collection is skipped too" {
	peer "$TMP/p"
	opt-tree -C "$TMP/p" put m k 0 >/dev/null
	local_of "$TMP/l" "$TMP/p" "$TMP/p"
	run opt-sync -C "$TMP/l" pull origin users m
	assert_success
	opt-tree -C "$TMP/l" put a/b k 1 >/dev/null
	# one transaction over a (pended) and m (its primary), then another over m and users
	opt-log -C "$TMP/p" commit <<<'{"collections": {"a": [{"type": "put", "key": "t", "value": 1}], "m": [{"type": "put", "key": "t", "value": 1}]}}' >/dev/null
	opt-log -C "$TMP/p" commit <<<'{"collections": {"m": [{"type": "put", "key": "u", "value": 1}], "users": [{"type": "put", "key": "u", "value": 1}]}}' >/dev/null
	opt-diary -C "$TMP/p" append zeta '"z2"' >/dev/null
	before_m=$(head_of "$TMP/l" m)
	before_t=$(tracking "$TMP/l" m)
	run --separate-stderr opt-sync -C "$TMP/l" pull
	assert_failure 3
	assert_equal "$(skipped)" "a
m
users"
	assert_line --partial '{"remote":"origin","collection":"m","status":"skipped","error":"it shares transaction '
	assert_line '{"remote":"origin","collection":"zeta","rev":2,"status":"new"}'
	[ "$(head_of "$TMP/l" m)" = "$before_m" ]
	[ "$(tracking "$TMP/l" m)" = "$before_t" ]
	[ "$(tracking "$TMP/l" users)" = "$(head_of "$TMP/l" users)" ]
	run opt-tree -C "$TMP/l" get m t
	assert_failure 1
	fsck_ok "$TMP/l"
}

@test "git://: names git serves and we do not take, and a clash, are skipped; the rest is pulled" {
	peer "$TMP/srv/r"
	start_git_daemon
	# git upload-pack serves even a name git refuses as a ref ('x~1')
	odd_ref "$TMP/srv/r" 'x~1'
	git --git-dir="$TMP/srv/r" update-ref refs/opt/collections/-x refs/opt/collections/users
	git --git-dir="$TMP/srv/r" update-ref refs/opt/collections/q/x+y refs/opt/collections/users
	git --git-dir="$TMP/srv/r" update-ref refs/opt/collections/a./b refs/opt/collections/users
	local_of "$TMP/l" "$TMP/srv/r" "$GITURL/r"
	opt-tree -C "$TMP/l" put a/b k 1 >/dev/null
	run --separate-stderr opt-sync -C "$TMP/l" pull
	assert_failure 4
	assert_equal "$(skipped)" "$(printf '%s\n' '-x' 'a' 'a./b' 'q/x+y' 'x~1' | sort)"
	assert_line '{"remote":"origin","collection":"a","status":"skipped","error":"collection '\''a'\'' cannot be created: collection '\''a/b'\'' exists","reason":"conflict"}'
	assert_line '{"remote":"origin","collection":"users","rev":1,"status":"new"}'
	assert_line '{"remote":"origin","collection":"zeta","rev":1,"status":"new"}'
	[ -z "$(tracking "$TMP/l" a)" ]
	[ "$(head_of "$TMP/l" users)" = "$(head_of "$TMP/srv/r" users)" ]
	# only the clash left: exit 3
	git --git-dir="$TMP/srv/r" update-ref -d refs/opt/collections/-x
	git --git-dir="$TMP/srv/r" update-ref -d refs/opt/collections/q/x+y
	git --git-dir="$TMP/srv/r" update-ref -d refs/opt/collections/a./b
	rm "$TMP/srv/r/refs/opt/collections/x~1"
	opt-tree -C "$TMP/srv/r" put users bob 2 >/dev/null
	run --separate-stderr opt-sync -C "$TMP/l" pull
	assert_failure 3
	assert_output '{"remote":"origin","collection":"a","status":"skipped","error":"collection '\''a'\'' cannot be created: collection '\''a/b'\'' exists","reason":"conflict"}
{"remote":"origin","collection":"users","rev":2,"status":"fast-forward"}
{"remote":"origin","collection":"zeta","rev":1,"status":"up-to-date"}'
	[ -z "$(tracking "$TMP/l" a)" ]
	fsck_ok "$TMP/l"
}

@test "cluster: a pull skips and reports a collection that clashes with one here, takes the rest; a peer's odd ref does not make it unreachable" {
	local i
	export OPT_CLUSTER_BACKOFF_MS=20
	for i in 1 2; do
		opt-block init "$TMP/p$i" >/dev/null
		opt-sync peer add "p$i" "$TMP/p$i"
		opt-log -C "$TMP/p$i" trust "$(key_of "$OPT_STORE")" --name s >/dev/null
	done
	for i in 1 2 3 4; do opt-tree put "c$i" k "$i" >/dev/null; done
	run opt-sync push
	assert_success
	git --git-dir="$TMP/p1" for-each-ref --format='%(objectname)' --count=1 refs/opt/collections/ >"$TMP/p1/refs/opt/collections/x~1"
	opt-block init "$TMP/t" >/dev/null
	opt-log -C "$TMP/t" trust "$(key_of "$OPT_STORE")" --name s
	for i in 1 2; do opt-sync -C "$TMP/t" peer add "p$i" "$TMP/p$i"; done
	opt-tree -C "$TMP/t" put c1/x k 1 >/dev/null
	run --separate-stderr opt-sync -C "$TMP/t" pull
	assert_failure 3
	assert_line --partial '"collection":"c1","status":"skipped","error":"collection '\''c1'\'' cannot be created: collection '\''c1/x'\'' exists"'
	refute_output --partial '"status":"unreachable"'
	assert_output --partial '"down":[]'
	for i in 2 3 4; do
		run opt-tree -C "$TMP/t" get "c$i" k
		assert_output "{\"key\":\"k\",\"value\":$i}"
	done
	[ -z "$(git --git-dir="$TMP/t" for-each-ref refs/opt/remotes/ | grep '/c1$')" ]
	[ -z "$(head_of "$TMP/t" c1)" ]
}

@test "cluster: rebalance lists a peer with an odd ref like any other" {
	local i
	export OPT_CLUSTER_BACKOFF_MS=20
	for i in 1 2; do
		opt-block init "$TMP/p$i" >/dev/null
		opt-sync peer add "p$i" "$TMP/p$i"
		opt-log -C "$TMP/p$i" trust "$(key_of "$OPT_STORE")" --name s >/dev/null
	done
	for i in 1 2 3 4; do opt-tree put "c$i" k "$i" >/dev/null; done
	run opt-sync push
	assert_success
	git --git-dir="$TMP/p1" for-each-ref --format='%(objectname)' --count=1 refs/opt/collections/ >"$TMP/p1/refs/opt/collections/x~1"
	run --separate-stderr opt-sync rebalance --dry-run
	assert_success
	assert_output --partial '"down":[]'
	run --separate-stderr opt-sync rebalance
	assert_success
	assert_output --partial '"down":[]'
}
