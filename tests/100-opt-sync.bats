#!/usr/bin/env bats
# opt-sync: remotes, clone, fetch, pull, push and status between real
# stores on this machine (paths and file:// URLs): round trips, offline
# divergence replayed, racing pushers, conflict policies, and remotes that
# lie (tampered blocks and logs, rewound history, untrusted authors).

load test_helper
load sync_helper

# ---- remotes ----

@test "remote add, ls and rm; duplicates, bad names and unknown remotes are refused" {
	cd "$TMP"
	opt-block init peer >/dev/null
	run opt-sync remote ls
	assert_success
	assert_output ''
	run opt-sync remote add origin ./peer
	assert_success
	assert_output ''
	opt-sync remote add web https://example.org/store.git
	opt-sync remote add far 'git@example.org:store'
	run opt-sync remote ls
	assert_success
	# a relative path is made absolute: the remote works from anywhere
	assert_output "{\"name\":\"far\",\"url\":\"git@example.org:store\"}
{\"name\":\"origin\",\"url\":\"$TMP/peer\"}
{\"name\":\"web\",\"url\":\"https://example.org/store.git\"}"
	run --separate-stderr opt-sync remote add origin /elsewhere
	assert_failure 2
	[[ $stderr == *"remote 'origin' exists already"* ]]
	for bad in 'a/b' '.x' '-x' 'x..y' 'x.lock' ''; do
		run --separate-stderr opt-sync remote add "$bad" /x
		[ "$status" -eq 2 ] || fail "remote add '$bad': exit $status"
	done
	run --separate-stderr opt-sync remote rm nosuch
	assert_failure 1
	[[ $stderr == "opt-sync: no remote 'nosuch'"* ]]
	run --separate-stderr opt-sync fetch nosuch
	assert_failure 1
	run opt-sync remote rm web
	assert_success
	run opt-sync remote ls
	assert_output "{\"name\":\"far\",\"url\":\"git@example.org:store\"}
{\"name\":\"origin\",\"url\":\"$TMP/peer\"}"
	run --separate-stderr opt-sync remote frob
	assert_failure 2
	run --separate-stderr opt-sync remote add onlyname
	assert_failure 2
	# the remotes are git remotes of the store
	run git --git-dir="$OPT_STORE" config remote.origin.url
	assert_output "$TMP/peer"
}

@test "remote rm drops the tracking refs" {
	seed "$TMP/a"
	opt-sync -C "$TMP/b" remote add a "$TMP/a" 2>/dev/null || { opt-block init "$TMP/b" >/dev/null; opt-sync -C "$TMP/b" remote add a "$TMP/a"; }
	trust_all "$TMP/b" "$TMP/a"
	opt-sync -C "$TMP/b" fetch a >/dev/null
	[ -n "$(git --git-dir="$TMP/b" for-each-ref refs/opt/remotes/a/)" ]
	opt-sync -C "$TMP/b" remote rm a
	[ -z "$(git --git-dir="$TMP/b" for-each-ref refs/opt/remotes/)" ]
	# the local collections are untouched (there were none)
	[ -z "$(git --git-dir="$TMP/b" for-each-ref refs/opt/collections/)" ]
}

# ---- clone ----

@test "clone copies trees, diaries and block collections; the clone verifies and passes git fsck" {
	seed "$TMP/a"
	cd "$TMP"
	run --separate-stderr opt-sync clone "$TMP/a" b
	assert_success
	assert_output '{"remote":"origin","collection":"events","rev":1,"status":"new"}
{"remote":"origin","collection":"things","rev":2,"status":"new"}
{"remote":"origin","collection":"users","rev":2,"status":"new"}'
	[ "$(content_of "$TMP/a")" = "$(content_of "$TMP/b")" ]
	[ -n "$(content_of "$TMP/b")" ]
	run opt-log -C "$TMP/b" verify
	assert_success
	fsck_ok "$TMP/b"
	# the same revisions, commit for commit
	[ "$(refs_of "$TMP/a")" = "$(refs_of "$TMP/b" | grep refs/opt/collections/)" ]
	# origin's key is trusted by name; no secret was copied
	run opt-log -C "$TMP/b" trusted
	assert_line "{\"key\":\"$(key_of "$TMP/a")\",\"name\":\"origin\"}"
	[ ! -e "$TMP/b/opt-identity" ] || ! cmp -s "$TMP/a/opt-identity" "$TMP/b/opt-identity"
	run opt-sync -C "$TMP/b" remote ls
	assert_output "{\"name\":\"origin\",\"url\":\"$TMP/a\"}"
	run opt-sync -C "$TMP/b" status
	assert_output '{"collection":"events","remote":"origin","ahead":0,"behind":0}
{"collection":"things","remote":"origin","ahead":0,"behind":0}
{"collection":"users","remote":"origin","ahead":0,"behind":0}'
}

@test "clone: file:// URLs, the default directory, existing directories" {
	seed "$TMP/a"
	mkdir "$TMP/w" && cd "$TMP/w"
	run --separate-stderr opt-sync clone "file://$TMP/a"
	assert_success
	[ -d "$TMP/w/.opt" ]
	[ "$(content_of "$TMP/a")" = "$(content_of "$TMP/w/.opt")" ]
	# a store with collections, or a directory that is no store, is refused
	run --separate-stderr opt-sync clone "$TMP/a" "$TMP/w/.opt"
	assert_failure
	[[ $stderr == *"it has collections"* ]]
	mkdir "$TMP/full" && touch "$TMP/full/x"
	run --separate-stderr opt-sync clone "$TMP/a" "$TMP/full"
	assert_failure
	[ -e "$TMP/full/x" ]
	# an empty store made beforehand (to trust keys first) is fine
	opt-block init "$TMP/pre" >/dev/null
	run opt-sync clone "$TMP/a" "$TMP/pre"
	assert_success
	[ "$(content_of "$TMP/a")" = "$(content_of "$TMP/pre")" ]
}

@test "clone of a missing remote exits 5 and leaves nothing behind" {
	cd "$TMP"
	run --separate-stderr opt-sync clone "$TMP/nowhere" c
	assert_failure 5
	[[ $stderr == "opt-sync: "*"$TMP/nowhere"* ]]
	[ ! -e "$TMP/c" ]
	run --separate-stderr opt-sync clone "file://$TMP/nowhere" c
	assert_failure 5
	[ ! -e "$TMP/c" ]
	run --separate-stderr opt-sync clone
	assert_failure 2
}

@test "clone: entries signed by keys the clone does not trust are refused until trusted" {
	seed "$TMP/a"
	opt-sync clone "$TMP/a" "$TMP/w" >/dev/null
	trust_all "$TMP/a" "$TMP/w"
	opt-diary -C "$TMP/w" append events '{"by":"w"}' >/dev/null
	opt-sync -C "$TMP/w" push >/dev/null
	cd "$TMP"
	# with no key given, a clone accepts every writer
	run --separate-stderr opt-sync clone "$TMP/a" open
	assert_success
	[ "$(content_of "$TMP/a")" = "$(content_of "$TMP/open")" ]
	# given keys, it accepts only those (and its origin's, by path)
	run --separate-stderr opt-sync clone "$TMP/a" c0 --trust "$(key_of "$TMP/a")"
	assert_failure 4
	[[ $stderr == *"does not trust"*"--trust KEY"* ]]
	# the clone keeps the collections that verified, without that one
	assert_line --partial '{"remote":"origin","collection":"events","status":"skipped"'
	run opt-tree -C "$TMP/c0" count users
	assert_output 2
	run opt-diary -C "$TMP/c0" count events
	assert_failure 1
	run --separate-stderr opt-sync clone "$TMP/a" c --trust "$(key_of "$TMP/w")"
	assert_success
	[ "$(content_of "$TMP/a")" = "$(content_of "$TMP/c")" ]
	run --separate-stderr opt-sync clone "$TMP/a" d --trust nothex
	assert_failure 2
	run --separate-stderr opt-sync clone "$TMP/a" d --trust "$(key_of "$TMP/w"),nothex"
	assert_failure 2
	[ ! -e "$TMP/d" ]
	# several writers: a comma-separated list
	opt-sync clone "$TMP/a" "$TMP/w2" --trust "$(key_of "$TMP/w")" >/dev/null
	trust_all "$TMP/a" "$TMP/w2"
	opt-diary -C "$TMP/w2" append events '{"by":"w2"}' >/dev/null
	opt-sync -C "$TMP/w2" push >/dev/null
	run --separate-stderr opt-sync clone "$TMP/a" e0 --trust "$(key_of "$TMP/w")"
	assert_failure 4
	run --separate-stderr opt-sync clone "$TMP/a" e --trust "$(key_of "$TMP/w"),$(key_of "$TMP/w2")"
	assert_success
	[ "$(content_of "$TMP/a")" = "$(content_of "$TMP/e")" ]
}

# ---- fetch, pull, push ----

@test "push and pull round trips fast-forward; status counts revisions on each side" {
	seed "$TMP/a"
	opt-sync clone "$TMP/a" "$TMP/b" >/dev/null
	trust_all "$TMP/a" "$TMP/b"
	# a moves on; b pulls
	opt-diary -C "$TMP/a" append events '{"n":3}' >/dev/null
	opt-tree -C "$TMP/a" put users carol '{"age":50}' >/dev/null
	run opt-sync -C "$TMP/b" fetch
	assert_success
	assert_output '{"remote":"origin","collection":"events","rev":2,"from":1,"status":"updated"}
{"remote":"origin","collection":"things","rev":2,"status":"unchanged"}
{"remote":"origin","collection":"users","rev":3,"from":2,"status":"updated"}'
	run opt-sync -C "$TMP/b" status origin
	assert_output '{"collection":"events","remote":"origin","ahead":0,"behind":1}
{"collection":"things","remote":"origin","ahead":0,"behind":0}
{"collection":"users","remote":"origin","ahead":0,"behind":1}'
	# fetch moved no collection
	[ "$(opt-diary -C "$TMP/b" count events)" = 2 ]
	run opt-sync -C "$TMP/b" pull
	assert_success
	assert_output '{"remote":"origin","collection":"events","rev":2,"status":"fast-forward"}
{"remote":"origin","collection":"things","rev":2,"status":"up-to-date"}
{"remote":"origin","collection":"users","rev":3,"status":"fast-forward"}'
	[ "$(content_of "$TMP/a")" = "$(content_of "$TMP/b")" ]
	# b moves on; b pushes
	opt-diary -C "$TMP/b" append events '{"n":4}' >/dev/null
	opt-tree -C "$TMP/b" del users bob >/dev/null
	opt-tree -C "$TMP/b" put newtree k '"v"' >/dev/null
	run opt-sync -C "$TMP/b" status
	assert_line '{"collection":"events","remote":"origin","ahead":1,"behind":0}'
	assert_line '{"collection":"newtree","remote":"origin","ahead":1,"behind":0}'
	run opt-sync -C "$TMP/b" push
	assert_success
	assert_output '{"remote":"origin","collection":"events","rev":3,"status":"pushed"}
{"remote":"origin","collection":"newtree","rev":1,"status":"pushed"}
{"remote":"origin","collection":"things","rev":2,"status":"up-to-date"}
{"remote":"origin","collection":"users","rev":4,"status":"pushed"}'
	[ "$(content_of "$TMP/a")" = "$(content_of "$TMP/b")" ]
	[ "$(refs_of "$TMP/a")" = "$(refs_of "$TMP/b" | grep refs/opt/collections/)" ]
	run opt-sync -C "$TMP/b" push
	assert_success
	refute_output --partial pushed
	run opt-log -C "$TMP/a" verify
	assert_success
	fsck_ok "$TMP/a"
	fsck_ok "$TMP/b"
	# named collections only
	opt-diary -C "$TMP/b" append events '{"n":5}' >/dev/null
	opt-tree -C "$TMP/b" put users dave '{}' >/dev/null
	run opt-sync -C "$TMP/b" push origin events
	assert_output '{"remote":"origin","collection":"events","rev":4,"status":"pushed"}'
	run opt-sync -C "$TMP/b" status
	assert_line '{"collection":"users","remote":"origin","ahead":1,"behind":0}'
	run --separate-stderr opt-sync -C "$TMP/b" push origin nosuch
	assert_failure 1
	run --separate-stderr opt-sync -C "$TMP/b" push origin 'bad..name'
	assert_failure 2
}

@test "file:// remotes work like paths" {
	seed "$TMP/a"
	opt-block init "$TMP/b" >/dev/null
	opt-sync -C "$TMP/b" remote add origin "file://$TMP/a"
	trust_all "$TMP/b" "$TMP/a"
	trust_all "$TMP/a" "$TMP/b"
	run opt-sync -C "$TMP/b" pull
	assert_success
	assert_line '{"remote":"origin","collection":"users","rev":2,"status":"new"}'
	opt-tree -C "$TMP/b" put users eve '{}' >/dev/null
	run opt-sync -C "$TMP/b" push
	assert_line '{"remote":"origin","collection":"users","rev":3,"status":"pushed"}'
	[ "$(content_of "$TMP/a")" = "$(content_of "$TMP/b")" ]
}

@test "two stores change the same diary and tree offline; after syncing both ways they hold both sides' changes once" {
	seed "$TMP/a"
	opt-sync clone "$TMP/a" "$TMP/b" >/dev/null
	opt-sync -C "$TMP/a" remote add b "$TMP/b"
	trust_all "$TMP/a" "$TMP/b"
	trust_all "$TMP/b" "$TMP/a"
	for i in 1 2 3; do
		opt-diary -C "$TMP/a" append events "{\"a\":$i}" >/dev/null
		opt-diary -C "$TMP/b" append events "{\"b\":$i}" >/dev/null
	done
	opt-tree -C "$TMP/a" put users ann '{"from":"a"}' >/dev/null
	opt-tree -C "$TMP/a" put users alice '{"age":31}' >/dev/null
	opt-tree -C "$TMP/b" put users ben '{"from":"b"}' >/dev/null
	opt-tree -C "$TMP/b" del users bob >/dev/null
	# b: pull replays its changes on a's, then push fast-forwards a
	run opt-sync -C "$TMP/b" pull
	assert_success
	assert_line '{"remote":"origin","collection":"events","rev":7,"status":"replayed","replayed":3}'
	assert_line '{"remote":"origin","collection":"users","rev":6,"status":"replayed","replayed":2}'
	run opt-sync -C "$TMP/b" push
	assert_success
	assert_line '{"remote":"origin","collection":"events","rev":7,"status":"pushed"}'
	# a pulls from b: nothing to replay, a fast-forward
	run opt-sync -C "$TMP/a" pull b
	assert_success
	assert_line '{"remote":"b","collection":"events","rev":7,"status":"up-to-date"}'
	[ "$(content_of "$TMP/a")" = "$(content_of "$TMP/b")" ]
	[ "$(refs_of "$TMP/a" | grep collections/)" = "$(refs_of "$TMP/b" | grep collections/)" ]
	# each change exactly once
	run opt-diary -C "$TMP/a" read events --compact
	assert_output '{"n":1}
{"n":2}
{"a":1}
{"a":2}
{"a":3}
{"b":1}
{"b":2}
{"b":3}'
	run opt-tree -C "$TMP/a" range users
	assert_output '{"key":"alice","value":{"age":31}}
{"key":"ann","value":{"from":"a"}}
{"key":"ben","value":{"from":"b"}}'
	run opt-log -C "$TMP/a" verify
	assert_success
	run opt-log -C "$TMP/b" verify
	assert_success
	fsck_ok "$TMP/a"
	fsck_ok "$TMP/b"
	# and the other way: a changes, b changes, a pushes to b
	opt-diary -C "$TMP/a" append events '"from a"' >/dev/null
	opt-diary -C "$TMP/b" append events '"from b"' >/dev/null
	run opt-sync -C "$TMP/a" push b
	assert_success
	assert_line '{"remote":"b","collection":"events","rev":9,"status":"replayed","replayed":1}'
	run opt-diary -C "$TMP/b" read events --reverse --limit 2 --compact
	assert_output '"from a"
"from b"'
	[ "$(content_of "$TMP/a")" = "$(content_of "$TMP/b")" ]
}

@test "racing pushers: 4 clones pushing 20 times each to one remote lose nothing" {
	local i j n
	opt-block init "$TMP/r" >/dev/null
	opt-diary -C "$TMP/r" append log '"start"' >/dev/null
	for i in 1 2 3 4; do opt-sync clone "$TMP/r" "$TMP/c$i" >/dev/null; done
	for i in 1 2 3 4; do
		for j in r c1 c2 c3 c4; do opt-log -C "$TMP/$j" trust "$(key_of "$TMP/c$i")" --name "c$i"; done
	done
	local -a pids=()
	for i in 1 2 3 4; do
		(
			for n in $(seq 1 20); do
				opt-diary -C "$TMP/c$i" append log "\"c$i-$n\"" >/dev/null || exit 1
				opt-sync -C "$TMP/c$i" push -q >/dev/null || { echo "c$i push $n: exit $?" >&2; exit 1; }
			done
		) &
		pids+=($!)
	done
	local failed=0
	for i in "${pids[@]}"; do wait "$i" || failed=1; done
	[ "$failed" -eq 0 ] || fail "a pusher failed"
	run opt-diary -C "$TMP/r" count log
	assert_output 81
	[ -z "$(opt-diary -C "$TMP/r" read log | sort | uniq -d)" ]
	for i in 1 2 3 4; do
		for n in 1 20; do opt-diary -C "$TMP/r" read log | grep -qx "\"c$i-$n\"" || fail "c$i-$n lost"; done
	done
	# each writer's entries stay in its own order
	for i in 1 2 3 4; do
		[ "$(opt-diary -C "$TMP/r" read log | grep "\"c$i-" | tr -d '"' | cut -d- -f2 | tr '\n' ' ')" = "$(seq -s ' ' 1 20) " ] ||
			fail "c$i out of order"
	done
	run opt-log -C "$TMP/r" verify
	assert_success
	fsck_ok "$TMP/r"
}

# ---- conflict policies ----

# a and b diverge on diary events: a appends "A", b appends "B1", "B2".
diverge() {
	seed "$TMP/a"
	opt-sync clone "$TMP/a" "$TMP/b" >/dev/null
	trust_all "$TMP/a" "$TMP/b"
	opt-diary -C "$TMP/a" append events '"A"' >/dev/null
	opt-diary -C "$TMP/b" append events '"B1"' >/dev/null
	opt-diary -C "$TMP/b" append events '"B2"' >/dev/null
}

@test "--conflict fail: exit 3, a JSON report of both sides' actions, nothing changed" {
	diverge
	local before
	before=$(refs_of "$TMP/b" | grep -v refs/opt/remotes/)
	run --separate-stderr opt-sync -C "$TMP/b" pull --conflict fail
	assert_failure 3
	assert_line '{"collection":"events","base":1,"ours":[{"entry":"B1","type":"append"},{"entry":"B2","type":"append"}],"theirs":[{"entry":"A","type":"append"}]}'
	# the other collections are reported as usual
	assert_line '{"remote":"origin","collection":"users","rev":2,"status":"up-to-date"}'
	[[ $stderr == "opt-sync: collection 'events' has diverged from remote 'origin' (--conflict fail)" ]]
	[ "$before" = "$(refs_of "$TMP/b" | grep -v refs/opt/remotes/)" ]
	run --separate-stderr opt-sync -C "$TMP/b" push --conflict=fail
	assert_failure 3
	assert_output --partial '"ours":[{"entry":"B1"'
	run opt-diary -C "$TMP/a" read events --compact
	assert_output '{"n":1}
{"n":2}
"A"'
	run --separate-stderr opt-sync -C "$TMP/b" pull --conflict nonsense
	assert_failure 2
}

@test "--conflict keep-remote drops our unpushed changes" {
	diverge
	run opt-sync -C "$TMP/b" pull --conflict keep-remote
	assert_success
	assert_line '{"remote":"origin","collection":"events","rev":2,"status":"kept-remote"}'
	[ "$(content_of "$TMP/a")" = "$(content_of "$TMP/b")" ]
	opt-diary -C "$TMP/b" append events '"B3"' >/dev/null
	opt-diary -C "$TMP/a" append events '"A2"' >/dev/null
	run opt-sync -C "$TMP/b" push --conflict keep-remote
	assert_success
	assert_line '{"remote":"origin","collection":"events","rev":3,"status":"kept-remote"}'
	run opt-diary -C "$TMP/b" read events --reverse --limit 1 --compact
	assert_output '"A2"'
}

@test "--conflict exec:PROG resolves each of our actions: rewrite it, or drop it with null" {
	diverge
	cat >"$TMP/resolve" <<'EOF'
#!/bin/sh
# keep B1 marked with what the remote did, drop the rest
jq -c 'if .local.entry == "B1" then .remote as $r | .local | .entry = {"was": "B1", "theirs": [$r[].entry]} else null end'
EOF
	chmod +x "$TMP/resolve"
	run opt-sync -C "$TMP/b" pull --conflict "exec:$TMP/resolve"
	assert_success
	assert_line '{"remote":"origin","collection":"events","rev":3,"status":"replayed","replayed":1}'
	run opt-diary -C "$TMP/b" read events --compact
	assert_output '{"n":1}
{"n":2}
"A"
{"theirs":["A"],"was":"B1"}'
	# a resolver that fails leaves the replay to finish later; exit 3
	opt-diary -C "$TMP/a" append events '"A2"' >/dev/null
	opt-diary -C "$TMP/b" append events '"B4"' >/dev/null
	run --separate-stderr opt-sync -C "$TMP/b" pull --conflict "exec:exit 9"
	assert_failure 3
	[[ $stderr == *"resolver 'exit 9' failed (exit status 9)"* ]]
	run --separate-stderr opt-sync -C "$TMP/b" pull --conflict 'exec:echo 42'
	assert_failure 3
	# nothing moved while the resolver failed
	run opt-diary -C "$TMP/b" read events --reverse --limit 1 --compact
	assert_output '"B4"'
	run opt-sync -C "$TMP/b" pull
	assert_success
	# what b had not pushed is replayed: the resolved entry too
	run opt-diary -C "$TMP/b" read events --reverse --limit 3 --compact
	assert_output '"B4"
{"theirs":["A"],"was":"B1"}
"A2"'
}

@test "block-level actions cannot be replayed: exit 3, nothing changed; keep-remote still works" {
	seed "$TMP/a"
	opt-sync clone "$TMP/a" "$TMP/b" >/dev/null
	echo '["v",0,0,10]' | opt-block -C "$TMP/a" apply -c things "$A" >/dev/null
	echo '["v",0,0,20]' | opt-block -C "$TMP/b" apply -c things "$A" >/dev/null
	local before
	before=$(refs_of "$TMP/b" | grep -v refs/opt/remotes/)
	run --separate-stderr opt-sync -C "$TMP/b" pull
	assert_failure 3
	[[ $stderr == *"cannot replay block-level actions"* ]]
	[ "$before" = "$(refs_of "$TMP/b" | grep -v refs/opt/remotes/)" ]
	run --separate-stderr opt-sync -C "$TMP/b" push
	assert_failure 3
	run opt-sync -C "$TMP/b" pull --conflict keep-remote
	assert_success
	run opt-block -C "$TMP/b" get -c things "$A"
	assert_output --partial '"v":10'
}

@test "--dry-run shows the plan and changes nothing" {
	diverge
	opt-tree -C "$TMP/b" put users zed '{}' >/dev/null
	opt-tree -C "$TMP/a" put newer k 1 >/dev/null
	local before
	before=$(refs_of "$TMP/b")
	before_a=$(refs_of "$TMP/a")
	run opt-sync -C "$TMP/b" fetch --dry-run
	assert_success
	assert_line --partial '"collection":"events","commit":'
	assert_line --partial '"collection":"newer","commit":'
	assert_line --regexp '"collection":"newer",.*"status":"new","dry_run":true'
	run opt-sync -C "$TMP/b" pull -n
	assert_success
	assert_line '{"remote":"origin","collection":"newer","rev":0,"status":"new","dry_run":true}'
	assert_line --regexp '"collection":"events",.*"status":"replayed","dry_run":true'
	run opt-sync -C "$TMP/b" push --dry-run
	assert_success
	assert_line '{"remote":"origin","collection":"users","rev":3,"status":"pushed","dry_run":true}'
	[ "$before" = "$(refs_of "$TMP/b")" ]
	[ "$before_a" = "$(refs_of "$TMP/a")" ]
}

@test "a collection made on both sides independently: appended after theirs; another kind cannot be replayed" {
	seed "$TMP/a"
	opt-sync clone "$TMP/a" "$TMP/b" >/dev/null
	opt-diary -C "$TMP/a" append fresh '"a"' >/dev/null
	opt-diary -C "$TMP/b" append fresh '"b"' >/dev/null
	opt-tree -C "$TMP/a" put mixed k 1 >/dev/null
	opt-diary -C "$TMP/b" append mixed '"d"' >/dev/null
	local before
	before=$(refs_of "$TMP/b" | grep -v refs/opt/remotes/)
	run --separate-stderr opt-sync -C "$TMP/b" pull
	assert_failure 3
	[[ $stderr == *"collection 'mixed' is a diary here and a tree at remote 'origin'"* ]]
	[ "$before" = "$(refs_of "$TMP/b" | grep -v refs/opt/remotes/)" ]
	run opt-sync -C "$TMP/b" pull origin fresh
	assert_success
	assert_output '{"remote":"origin","collection":"fresh","rev":2,"status":"replayed","replayed":1}'
	run opt-diary -C "$TMP/b" read fresh --compact
	assert_output '"a"
"b"'
	run opt-sync -C "$TMP/b" pull --conflict keep-remote
	assert_success
	assert_line '{"remote":"origin","collection":"mixed","rev":1,"status":"kept-remote"}'
	run opt-tree -C "$TMP/b" get mixed k
	assert_output '{"key":"k","value":1}'
}

# ---- multi-collection transactions ----

@test "a multi-collection transaction travels whole: pushed, and replayed as one transaction" {
	seed "$TMP/a"
	opt-sync clone "$TMP/a" "$TMP/b" >/dev/null
	trust_all "$TMP/a" "$TMP/b"
	local trx
	trx=$(echo '{"collections":{"events":[{"type":"append","entry":"multi"}],"users":[{"type":"put","key":"m","value":1}]}}' |
		opt-log -C "$TMP/b" commit | jq -r .trx)
	# pushing one of them pushes the other too (pends before the primary)
	run opt-sync -C "$TMP/b" push origin users
	assert_success
	assert_output '{"remote":"origin","collection":"events","rev":2,"status":"pushed"}
{"remote":"origin","collection":"users","rev":3,"status":"pushed"}'
	run opt-log -C "$TMP/a" status "$trx"
	assert_output --partial '"status":"committed"'
	run opt-diary -C "$TMP/a" read events --reverse --limit 1
	assert_output '"multi"'
	# diverged: the transaction is replayed as one transaction, keeping its ID
	opt-diary -C "$TMP/a" append events '"A"' >/dev/null
	opt-tree -C "$TMP/a" put users fromA 1 >/dev/null
	trx2=$(echo '{"collections":{"events":[{"type":"append","entry":"multi2"}],"users":[{"type":"put","key":"m2","value":2}]}}' |
		opt-log -C "$TMP/b" commit | jq -r .trx)
	run opt-sync -C "$TMP/b" push
	assert_success
	assert_line '{"remote":"origin","collection":"events","rev":4,"status":"replayed","replayed":1}'
	assert_line '{"remote":"origin","collection":"users","rev":5,"status":"replayed","replayed":1}'
	trx=$(opt-log -C "$TMP/a" show users | tail -n 1 | jq -r .trx)
	[ "$trx" = "$trx2" ]
	[ "$(opt-log -C "$TMP/a" show events | tail -n 1 | jq -r .trx)" = "$trx" ]
	run opt-log -C "$TMP/a" status "$trx"
	assert_output --partial '"status":"committed"'
	[ "$(content_of "$TMP/a")" = "$(content_of "$TMP/b")" ]
	run opt-log -C "$TMP/a" verify
	assert_success
	# pulling one collection of a transaction brings the others
	echo '{"collections":{"events":[{"type":"append","entry":"multi3"}],"users":[{"type":"put","key":"m3","value":3}]}}' |
		opt-log -C "$TMP/a" commit >/dev/null
	run opt-sync -C "$TMP/b" pull origin users
	assert_success
	assert_output '{"remote":"origin","collection":"events","rev":5,"status":"fast-forward"}
{"remote":"origin","collection":"users","rev":6,"status":"fast-forward"}'
	[ "$(content_of "$TMP/a")" = "$(content_of "$TMP/b")" ]
}

# ---- remotes that lie ----

@test "hostile remote: a clone from a path copies its packs but verifies all the same: a tampered store is refused" {
	seed "$OPT_STORE"
	GD=$OPT_STORE
	tamper things 2 edit_block "$A" '.v = 99'
	run --separate-stderr opt-sync clone "$OPT_STORE" "$TMP/b"
	assert_failure 4
	[[ $stderr == *"collection 'things' refused: "*"does not match the hash"* ]]
	# the clone holds the collections that verified, not that one
	run opt-block -C "$TMP/b" ls -c things
	assert_failure 1
	run opt-tree -C "$TMP/b" count users
	assert_output 2
}

@test "hostile remote: a tampered block is refused (exit 4), the local store is unchanged" {
	seed "$OPT_STORE"
	opt-sync clone "$OPT_STORE" "$TMP/b" >/dev/null
	echo "{\"header\":{\"id\":\"$C\",\"type\":\"t\"},\"v\":3}" | opt-block put -c things >/dev/null
	GD=$OPT_STORE
	tamper things 3 edit_block "$A" '.v = 99'
	local before
	before=$(refs_of "$TMP/b")
	run --separate-stderr opt-sync -C "$TMP/b" fetch
	assert_failure 4
	[[ $stderr == *"remote 'origin': collection 'things' refused: "*"does not match the hash"* ]]
	[ "$before" = "$(refs_of "$TMP/b")" ]
	run --separate-stderr opt-sync -C "$TMP/b" pull
	assert_failure 4
	[ "$before" = "$(refs_of "$TMP/b")" ]
	# push fetches first: that collection is refused too and left alone,
	# the others go
	opt-tree -C "$TMP/b" put users x 1 >/dev/null
	before=$(refs_of "$OPT_STORE" | grep -v /users)
	run --separate-stderr opt-sync -C "$TMP/b" push
	assert_failure 4
	assert_line --partial '{"remote":"origin","collection":"things","status":"skipped"'
	[ "$before" = "$(refs_of "$OPT_STORE" | grep -v /users)" ]
	run opt-tree get users x
	assert_success
	run opt-log -C "$TMP/b" verify
	assert_success
}

@test "hostile remote: an altered log entry is refused (exit 4)" {
	seed "$OPT_STORE"
	opt-sync clone "$OPT_STORE" "$TMP/b" >/dev/null
	opt-diary append events '{"n":3}' >/dev/null
	GD=$OPT_STORE
	tamper events 2 edit_log_tail '.entries[-1].actions[0].entry = {"n":33}'
	local before
	before=$(refs_of "$TMP/b")
	run --separate-stderr opt-sync -C "$TMP/b" pull
	assert_failure 4
	[[ $stderr == *"collection 'events' refused: log entry rev 2"* ]]
	[ "$before" = "$(refs_of "$TMP/b")" ]
	# a forged entry with a recomputed hash fails the signature
	tamper events 2 edit_log_tail '.entries[-1].time += 1'
	run --separate-stderr opt-sync -C "$TMP/b" pull
	assert_failure 4
	[ "$before" = "$(refs_of "$TMP/b")" ]
	run opt-diary -C "$TMP/b" count events
	assert_output 2
}

@test "hostile remote: rewound history is refused (exit 4)" {
	seed "$OPT_STORE"
	opt-sync clone "$OPT_STORE" "$TMP/b" >/dev/null
	opt-tree put users x 1 >/dev/null
	opt-sync -C "$TMP/b" pull >/dev/null
	# the remote drops its last revision, then writes another one
	git --git-dir="$OPT_STORE" update-ref refs/opt/collections/users refs/opt/collections/users~1
	opt-tree put users y 2 >/dev/null
	local before
	before=$(refs_of "$TMP/b")
	run --separate-stderr opt-sync -C "$TMP/b" pull
	assert_failure 4
	[[ $stderr == *"collection 'users' was rewound"* ]]
	[ "$before" = "$(refs_of "$TMP/b")" ]
	run --separate-stderr opt-sync -C "$TMP/b" fetch origin users
	assert_failure 4
	# only the other collections: fine
	run opt-sync -C "$TMP/b" pull origin events
	assert_success
}

@test "hostile remote after a good fetch: tampering in the new revisions only is refused; a rewritten old one is a rewind" {
	seed "$OPT_STORE"
	opt-sync clone "$OPT_STORE" "$TMP/b" >/dev/null
	# fetched and verified at rev 2; the remote moves on by two revisions
	opt-tree put users x 1 >/dev/null
	opt-tree put users y 2 >/dev/null
	GD=$OPT_STORE
	local leaf good before
	leaf=$(opt-block ls -c users | jq -r 'select(.type == "TL") | .id')
	good=$(G rev-parse refs/opt/collections/users)
	before=$(refs_of "$TMP/b")
	# a value changed at rev 3 (and so at rev 4) without an entry saying so
	tamper users 3 edit_block "$leaf" '.entries[0][1] = 99'
	run --separate-stderr opt-sync -C "$TMP/b" fetch
	assert_failure 4
	[[ $stderr == *"collection 'users' refused: "*"does not match the hash"* ]]
	[ "$before" = "$(refs_of "$TMP/b")" ]
	# the new entry altered (its hash recomputed: the signature fails)
	G update-ref refs/opt/collections/users "$good"
	tamper users 4 edit_log_tail '.entries[-1].time += 1 | .entries[-1].hash = "0"'
	run --separate-stderr opt-sync -C "$TMP/b" pull
	assert_failure 4
	[[ $stderr == *"collection 'users' refused: log entry rev 4"* ]]
	[ "$before" = "$(refs_of "$TMP/b")" ]
	# an old, already fetched revision rewritten (and the new ones on top)
	G update-ref refs/opt/collections/users "$good"
	tamper users 1 edit_block "$leaf" '.entries[0][1] = 99'
	run --separate-stderr opt-sync -C "$TMP/b" pull
	assert_failure 4
	[[ $stderr == *"collection 'users' was rewound"* ]]
	[ "$before" = "$(refs_of "$TMP/b")" ]
	# the honest history comes through, verified from rev 2 on
	G update-ref refs/opt/collections/users "$good"
	run opt-sync -C "$TMP/b" pull
	assert_success
	assert_line '{"remote":"origin","collection":"users","rev":4,"status":"fast-forward"}'
	run opt-tree -C "$TMP/b" get users y
	assert_output '{"key":"y","value":2}'
	run opt-log -C "$TMP/b" verify
	assert_success
}

# Store $1 with a tree of 100 entries (branches over leaves), the
# collection users.
tree_store() {
	opt-block init "$1" >/dev/null
	for i in $(seq 1 100); do echo "{\"key\":\"k$i\",\"value\":$i}"; done | opt-tree -C "$1" put users >/dev/null
}
# Clone and opt-log verify both refuse store $1 (exit 4), naming $2.
both_refuse() {
	run --separate-stderr opt-log -C "$1" verify users
	assert_failure 4
	[[ $stderr == *"$2"* ]]
	run --separate-stderr opt-sync clone "$1" "$TMP/c"
	assert_failure 4
	[[ $stderr == *"collection 'users' refused: "*"$2"* ]]
	[ ! -e "$TMP/c" ]
}
# A hostile peer's modified opt-block apply (built by make units): block
# operations on any collection, a tree's blocks too, logged and signed.
hostile_apply() {
	local tool=$OPT_BIN/../unit/hostile-apply
	[ -x "$tool" ] || fail "$tool is not built (make units)"
	"$tool" "$@"
}
# The block $1 stored as indented JSON: the same value, not canonical.
pretty_block() { put_blob "$1" "$(G cat-file blob "$TC:$(bpath "$1")" | jq .)"; }
pretty_log_head() { pretty_block "$(G cat-file blob "$TC:$(bpath "$(header_id "$TCOLL")")" | jq -r .headId)"; }

@test "hostile remote: what verification reads as stored text is checked, not trusted: non-canonical log blocks and leaves, leaves out of order, separators that do not route, a count that lies" {
	tree_store "$TMP/a"
	run opt-sync clone "$TMP/a" "$TMP/ok"
	assert_success
	local hid root branch leaf last first n
	GD=$TMP/a
	hid=$(header_id users)
	root=$(opt-block -C "$TMP/a" get -c users "$hid" | jq -r .rootId)
	# (a log block and a leaf changed by hand: the same values, other text)
	cp -a "$TMP/a" "$TMP/s1"
	GD=$TMP/s1
	tamper users 1 pretty_log_head
	both_refuse "$TMP/s1" "is not stored as canonical JSON"
	cp -a "$TMP/a" "$TMP/s2"
	GD=$TMP/s2
	leaf=$(opt-block -C "$TMP/a" get -c users "$root" | jq -r '.nodes[0]')
	tamper users 1 pretty_block "$leaf"
	both_refuse "$TMP/s2" "is not stored as canonical JSON"
	# (written through the log, signed by a trusted key, by a modified
	# opt-block, ours refusing a tree's blocks: only the structure check
	# can tell)
	cp -a "$TMP/a" "$TMP/s3"
	opt-block -C "$TMP/s3" get -c users "$leaf" | jq -c '[["entries",0,2,[.entries[1],.entries[0]]]]' |
		hostile_apply "$TMP/s3" users "$leaf" >/dev/null
	both_refuse "$TMP/s3" "btree leaf '$leaf' entries 0 and 1 are out of order"
	cp -a "$TMP/a" "$TMP/s4"
	first=$(opt-tree -C "$TMP/a" range users --limit 1 | jq -c .key)
	echo "[[\"partitions\",0,1,[$first]]]" | hostile_apply "$TMP/s4" users "$root" >/dev/null
	both_refuse "$TMP/s4" "btree leaf '$leaf' entry 0 is outside the bounds of its parent's partitions"
	cp -a "$TMP/a" "$TMP/s5"
	last=$(opt-block -C "$TMP/a" get -c users "$root" | jq -r '.nodes[-1]')
	n=$(opt-block -C "$TMP/a" get -c users "$last" | jq '.entries | length')
	echo "[[\"entries\",$n,0,[[\"zzz\",1]]]]" | hostile_apply "$TMP/s5" users "$last" >/dev/null
	both_refuse "$TMP/s5" "the header counts 100 entries, but the tree holds 101"
	# the honest store still clones and verifies
	run opt-log -C "$TMP/a" verify users
	assert_success
	run opt-tree -C "$TMP/ok" count users
	assert_output 100
}

@test "an untrusted author is refused until opt-log trust" {
	seed "$TMP/a"
	opt-sync clone "$TMP/a" "$TMP/b" >/dev/null
	opt-sync clone "$TMP/a" "$TMP/m" >/dev/null
	# m writes and pushes to a (a does not check what is pushed to it)
	opt-diary -C "$TMP/m" append events '"by m"' >/dev/null
	opt-sync -C "$TMP/m" push >/dev/null
	local before
	before=$(refs_of "$TMP/b")
	opt-log -C "$TMP/b" restrict >/dev/null
	run --separate-stderr opt-sync -C "$TMP/b" pull
	assert_failure 4
	[[ $stderr == *"signed by key $(key_of "$TMP/m"), which this store does not trust (opt-log trust KEY)"* ]]
	[ "$before" = "$(refs_of "$TMP/b")" ]
	opt-log -C "$TMP/b" trust "$(key_of "$TMP/m")" --name m
	run opt-sync -C "$TMP/b" pull
	assert_success
	run opt-diary -C "$TMP/b" read events --reverse --limit 1
	assert_output '"by m"'
}

@test "a missing remote path exits 5; a remote that is no store too" {
	opt-sync remote add gone "$TMP/nowhere"
	run --separate-stderr opt-sync fetch gone
	assert_failure 5
	[[ $stderr == "opt-sync: cannot reach remote 'gone'"* ]]
	run --separate-stderr opt-sync pull gone
	assert_failure 5
	run --separate-stderr opt-sync push gone
	assert_failure 5
	mkdir "$TMP/plain"
	git init -q --bare "$TMP/plain/repo.git"
	opt-sync remote add plain "$TMP/plain/repo.git"
	run --separate-stderr opt-sync fetch plain
	assert_failure 5
	# no remote at all
	opt-block init "$TMP/lonely" >/dev/null
	run --separate-stderr opt-sync -C "$TMP/lonely" fetch
	assert_failure 1
	[[ $stderr == *"has no remote"* ]]
}

# ---- locking, interruption ----

@test "a second sync waits for the first, then gives up with exit 6" {
	seed "$TMP/a"
	opt-sync clone "$TMP/a" "$TMP/b" >/dev/null
	flock "$TMP/b/opt-sync.lock" sleep 3 &
	sleep 0.3
	run --separate-stderr env OPT_BUSY_TIMEOUT=300 opt-sync -C "$TMP/b" pull
	assert_failure 6
	[[ $stderr == *"another sync"* ]]
	# within the busy timeout it waits and goes on
	run env OPT_BUSY_TIMEOUT=10000 opt-sync -C "$TMP/b" pull -q
	assert_success
	wait
}

@test "a replay killed half-way is finished by the next sync, each transaction once" {
	diverge
	opt-diary -C "$TMP/b" append events '"B3"' >/dev/null
	# the second replayed transaction dies before its commit
	run env OPT_TEST_CRASH=txn:before-commit@2 opt-sync -C "$TMP/b" pull
	[ "$status" -eq 137 ] || fail "expected SIGKILL, got $status: $output"
	[ -n "$(git --git-dir="$TMP/b" for-each-ref refs/opt/sync/backup/)" ]
	run opt-sync -C "$TMP/b" pull
	assert_success
	[ -z "$(git --git-dir="$TMP/b" for-each-ref refs/opt/sync/backup/)" ]
	run opt-diary -C "$TMP/b" read events --compact
	assert_output '{"n":1}
{"n":2}
"A"
"B1"
"B2"
"B3"'
	run opt-log -C "$TMP/b" verify
	assert_success
}

# ---- the command line ----

@test "usage errors, --help, and a closed stdout" {
	run opt-sync --help
	assert_success
	assert_line --partial 'remote add NAME URL | rm NAME | ls'
	run opt-sync push --help
	assert_success
	# the usage, wrapped at 80 columns
	assert_equal "$(sed '/^$/q' <<<"$output" | tr '\n' ' ' | sed 's/  */ /g; s/ $//')" \
		'usage: opt-sync push [REMOTE] [COLL...] [--dry-run] [--conflict POLICY] [--cluster] [--min N] [--retries N] [--promote]'
	run --separate-stderr opt-sync status a b
	assert_failure 2
	run --separate-stderr opt-sync clone a b c
	assert_failure 2
	run --separate-stderr opt-sync fetch 'bad/remote'
	assert_failure 2
	seed "$TMP/a"
	opt-sync clone "$TMP/a" "$TMP/b" >/dev/null
	run bash -c "opt-sync -C '$TMP/b' status | true"
	run --separate-stderr bash -c "opt-sync -C '$TMP/b' status >&-"
	assert_failure 7
}
