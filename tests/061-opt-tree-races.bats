#!/usr/bin/env bats
# opt-tree under concurrent writers: the loser of a race replays its
# actions on the newer state, so writes of different keys all land, once.

load test_helper

revs() {
	git --git-dir="$OPT_STORE" rev-list --count "refs/opt/collections/$1"
}

# records PREFIX N: N records with keys PREFIX-000 ... , one a line
records() {
	local i
	for ((i = 0; i < $2; i++)); do
		printf '{"key":"%s-%03d","value":{"i":%d,"w":"%s"}}\n' "$1" "$i" "$i" "$1"
	done
}

# Check the log of tree $1 when opt-log is built: $2 entries, each
# transaction once, each key of the input files $3... put exactly once.
log_ok() {
	local name=$1 n=$2
	shift 2
	[ -x "$OPT_BIN/opt-log" ] || return 0
	opt-log show "$name" >"$TMP/log" || fail "opt-log show $name failed"
	[ "$(wc -l <"$TMP/log")" -eq "$n" ] || fail "the log of $name has $(wc -l <"$TMP/log") entries, not $n"
	[ "$(jq -r .trx "$TMP/log" | sort -u | wc -l)" -eq "$n" ] || fail "a transaction of $name is logged twice"
	# revisions 1..n in order
	[ "$(jq -r .rev "$TMP/log" | tr '\n' ' ')" = "$(seq 1 "$n" | tr '\n' ' ')" ] ||
		fail "the log of $name does not hold revisions 1..$n in order"
	jq -c '.actions[] | select(.type == "put") | .key' "$TMP/log" | sort >"$TMP/logged"
	cat "$@" | jq -c .key | sort >"$TMP/sent"
	diff "$TMP/sent" "$TMP/logged" || fail "the log of $name does not hold every put exactly once"
}

@test "two processes putting different keys into one tree at once: both land, once each" {
	local round
	opt-tree put shared seed 0 >/dev/null
	for round in 1 2 3 4 5; do
		records "a$round" 100 >"$TMP/in.a$round"
		records "b$round" 100 >"$TMP/in.b$round"
		opt-tree put shared <"$TMP/in.a$round" >"$TMP/out.a" 2>"$TMP/err.a" &
		opt-tree put shared <"$TMP/in.b$round" >"$TMP/out.b" 2>"$TMP/err.b" &
		wait
		[ ! -s "$TMP/err.a" ] || fail "round $round, a: $(cat "$TMP/err.a")"
		[ ! -s "$TMP/err.b" ] || fail "round $round, b: $(cat "$TMP/err.b")"
		grep -q '"put":100}$' "$TMP/out.a" || fail "round $round, a: $(cat "$TMP/out.a")"
		grep -q '"put":100}$' "$TMP/out.b" || fail "round $round, b: $(cat "$TMP/out.b")"
		# one revision each, and they differ
		[ "$(cat "$TMP/out.a" "$TMP/out.b" | jq .rev | sort -u | wc -l)" -eq 2 ]
	done
	[ "$(revs shared)" -eq 11 ]
	run opt-tree count shared
	assert_output 1001
	cat "$TMP"/in.* | jq -c .key | opt-tree get shared --json-keys - >"$TMP/got"
	[ "$(wc -l <"$TMP/got")" -eq 1000 ]
	diff <(cat "$TMP"/in.* | sort) <(sort "$TMP/got")
	echo '{"key":"seed","value":0}' >"$TMP/in.seed"
	log_ok shared 11 "$TMP"/in.*
	fsck_ok
}

@test "two single puts at the same moment, many times: neither is lost" {
	local i
	for i in $(seq 1 20); do
		opt-tree put pair "x$i" "$i" >/dev/null 2>>"$TMP/err" &
		opt-tree put pair "y$i" "$i" >/dev/null 2>>"$TMP/err" &
		wait
	done
	[ ! -s "$TMP/err" ] || fail "$(cat "$TMP/err")"
	[ "$(revs pair)" -eq 40 ]
	run opt-tree count pair
	assert_output 40
	for i in $(seq 1 20); do echo "x$i"; echo "y$i"; done >"$TMP/keys"
	run bash -c "opt-tree get pair - <'$TMP/keys' | wc -l"
	assert_output 40
	if [ -x "$OPT_BIN/opt-log" ]; then
		run bash -c "opt-log show pair | jq -r .trx | sort -u | wc -l"
		assert_output 40
	fi
}

@test "4 processes x 50 put --each records on one tree: 200 records, each once" {
	local w
	for w in 1 2 3 4; do
		records "w$w" 50 >"$TMP/in.$w"
		opt-tree put race --each <"$TMP/in.$w" >"$TMP/ack.$w" 2>"$TMP/err.$w" &
	done
	wait
	for w in 1 2 3 4; do
		[ ! -s "$TMP/err.$w" ] || fail "writer $w: $(cat "$TMP/err.$w")"
		[ "$(wc -l <"$TMP/ack.$w")" -eq 50 ] || fail "writer $w: $(wc -l <"$TMP/ack.$w") acknowledgements, not 50"
	done
	# 200 transactions, revisions 1..200, each acknowledged once
	[ "$(revs race)" -eq 200 ]
	[ "$(cat "$TMP"/ack.* | jq .rev | sort -n | uniq | wc -l)" -eq 200 ]
	[ "$(cat "$TMP"/ack.* | jq .rev | sort -n | tail -n 1)" -eq 200 ]
	run opt-tree count race
	assert_output 200
	opt-tree range race >"$TMP/got"
	diff <(cat "$TMP"/in.* | sort) "$TMP/got"
	log_ok race 200 "$TMP"/in.*
	fsck_ok
}

@test "creating one tree from two processes at once: one collection with both keys, no error" {
	local i
	for i in $(seq 1 10); do
		opt-tree put "new$i" "a$i" 1 >"$TMP/out.a" 2>"$TMP/err.a" &
		opt-tree put "new$i" "b$i" 2 >"$TMP/out.b" 2>"$TMP/err.b" &
		wait
		[ ! -s "$TMP/err.a" ] && [ ! -s "$TMP/err.b" ] ||
			fail "round $i: $(cat "$TMP/err.a" "$TMP/err.b")"
		run opt-tree get "new$i" "a$i" "b$i"
		assert_success
		assert_output "$(printf '{"key":"a%d","value":1}\n{"key":"b%d","value":2}' "$i" "$i")"
		[ "$(revs "new$i")" -eq 2 ] || fail "round $i: $(revs "new$i") revisions"
		# one of the two created it
		[ "$(cat "$TMP/out.a" "$TMP/out.b" | jq .rev | sort | tr '\n' ' ')" = "1 2 " ]
	done
	run bash -c "opt-tree ls | wc -l"
	assert_output 10
	fsck_ok
}

@test "creating one tree from two processes at once in a store not created yet" {
	# odd rounds create the store with opt-block init from both processes
	# (a store named with OPT_STORE must exist), even rounds find none and
	# create ./.opt: either way the slower process must not fail
	local i s
	for i in $(seq 1 10); do
		s="$TMP/store$i"
		if [ $((i % 2)) -eq 1 ]; then
			(opt-block init "$s" >/dev/null && OPT_STORE=$s opt-tree put new "a$i" 1 >/dev/null) 2>"$TMP/err.a" &
			(opt-block init "$s" >/dev/null && OPT_STORE=$s opt-tree put new "b$i" 2 >/dev/null) 2>"$TMP/err.b" &
		else
			mkdir "$s"
			(cd "$s" && unset OPT_STORE && opt-tree put new "a$i" 1 >/dev/null 2>"$TMP/err.a") &
			(cd "$s" && unset OPT_STORE && opt-tree put new "b$i" 2 >/dev/null 2>"$TMP/err.b") &
			s="$s/.opt"
		fi
		wait
		# the notes aside, no error
		grep -hv "^opt-tree: created store '" "$TMP/err.a" "$TMP/err.b" >"$TMP/err" || true
		[ ! -s "$TMP/err" ] || fail "round $i: $(cat "$TMP/err")"
		run env OPT_STORE="$s" opt-tree count new
		assert_output 2
		fsck_ok "$s"
	done
}
