#!/usr/bin/env bats
# opt-block under concurrent writers and under kill -9.

load test_helper

gen() { # gen PREFIX N: N one-block documents, one a line
	local i
	for ((i = 0; i < $2; i++)); do
		printf '{"header":{"type":"t"},"w":"%s","i":%d}\n' "$1" "$i"
	done
}

@test "4 processes x 50 transactions on one collection: every acknowledged write is there, once" {
	for w in 1 2 3 4; do
		gen "w$w" 50 | opt-block put -c race --each > "$TMP/ack.$w" 2> "$TMP/err.$w" &
	done
	wait
	for w in 1 2 3 4; do
		[ ! -s "$TMP/err.$w" ] || { cat "$TMP/err.$w"; false; }
		[ "$(wc -l < "$TMP/ack.$w")" -eq 50 ]
	done
	# 200 transactions, revisions 1..200, each exactly once
	run git --git-dir="$OPT_STORE" rev-list --count refs/opt/collections/race
	assert_output 200
	revs=$(cat "$TMP"/ack.* | sed 's/.*"rev":\([0-9]*\).*/\1/' | sort -n | uniq | wc -l)
	[ "$revs" -eq 200 ]
	cat "$TMP"/ack.* | sed 's/.*"id":"\([a-z2-7]*\)".*/"\1"/' > "$TMP/ids"
	run bash -c "opt-block get -c race - < '$TMP/ids' | wc -l"
	assert_output 200
	fsck_ok
}

@test "writers to different collections do not block each other" {
	for w in 1 2 3; do
		gen "w$w" 30 | opt-block put -c "coll$w" --each > "$TMP/ack.$w" &
	done
	wait
	for w in 1 2 3; do
		run git --git-dir="$OPT_STORE" rev-list --count "refs/opt/collections/coll$w"
		assert_output 30
	done
}

@test "kill -9 at random moments: the store stays whole and every acknowledged write survives" {
	export OPT_STALE_LOCK_MS=300
	for round in $(seq 1 15); do
		gen "r$round" 400 | opt-block put -c crash --each >> "$TMP/ack" 2>/dev/null &
		pid=$!
		# the first round kills only after a write was acknowledged (on a
		# loaded machine a sanitized writer can take longer to start than
		# the longest delay): so there is one to check
		if [ "$round" -eq 1 ]; then
			for _ in $(seq 1 300); do [ -s "$TMP/ack" ] && break; sleep 0.1; done
		fi
		sleep "0.$((RANDOM % 8 + 2))"
		pkill -9 -P $pid opt-block 2>/dev/null || true
		kill -9 $pid 2>/dev/null || true
		wait $pid 2>/dev/null || true
	done
	fsck_ok
	# whole lines only: a line cut by the kill was never acknowledged
	grep -E '^\{"id":"[a-z2-7]{26}","collection":"crash","rev":[0-9]+\}$' "$TMP/ack" \
		| sed 's/.*"id":"\([a-z2-7]*\)".*/"\1"/' > "$TMP/ids"
	n=$(wc -l < "$TMP/ids")
	[ "$n" -gt 0 ]
	run bash -c "opt-block get -c crash - < '$TMP/ids' | wc -l"
	assert_output "$n"
	# revisions are consecutive and the log agrees with the commits
	head=$(git --git-dir="$OPT_STORE" rev-list --count refs/opt/collections/crash)
	run opt-block stat -c crash
	assert_output --partial "\"rev\":$head,"
	# the collection is not wedged: a new write goes through
	run opt-block put -c crash <<<'{"after":"crash"}'
	assert_success
	assert_output --partial "\"rev\":$((head + 1))"
}

@test "a stale ref lock left by a killed writer is broken after OPT_STALE_LOCK_MS" {
	echo '{"a":1}' | opt-block put -c locked >/dev/null
	touch "$OPT_STORE/refs/opt/collections/locked.lock"
	OPT_STALE_LOCK_MS=200 run opt-block put -c locked <<<'{"a":2}'
	assert_success
	assert_output --partial '"rev":2'
	[ ! -e "$OPT_STORE/refs/opt/collections/locked.lock" ]
}

@test "a collection locked for longer than the busy timeout gives exit 6" {
	echo '{"a":1}' | opt-block put -c held >/dev/null
	touch "$OPT_STORE/refs/opt/collections/held.lock"
	OPT_STALE_LOCK_MS=600000 OPT_BUSY_TIMEOUT=300 run --separate-stderr opt-block put -c held <<<'{"a":2}'
	assert_failure 6
	[[ "$stderr" == *"busy"* ]]
	rm "$OPT_STORE/refs/opt/collections/held.lock"
}
