#!/usr/bin/env bats
# A full disk: writes fail cleanly (exit 7, a clear message, nothing half
# written), everything committed before stays readable and verifies, and
# once space is freed writes work again.  The store lives on a 2 MB tmpfs,
# which needs root (the test is skipped, saying why, when mount is not
# permitted).

load test_helper

DISK=

setup() {
	TMP="$(mktemp -d "${BATS_TMPDIR:-/tmp}/opt-test.XXXXXX")"
	export HOME="$TMP/home"
	mkdir -p "$HOME" "$TMP/disk"
	cd "$TMP"
	export OPT_TXN_TTL=200
	local why
	if ! why=$(mount -t tmpfs -o size=2m tmpfs "$TMP/disk" 2>&1); then
		skip "cannot mount a 2 MB tmpfs (needs root): ${why:-mount failed}"
	fi
	DISK="$TMP/disk"
	export OPT_STORE="$DISK/store"
	opt-block init "$OPT_STORE" >/dev/null
}

teardown() {
	cd /
	if [ -n "$DISK" ]; then
		umount "$DISK" || umount -l "$DISK" || true
	fi
	[ -n "${TMP:-}" ] && rm -rf "$TMP"
}

# Free space on the tmpfs, in KiB.
avail() { df -k --output=avail "$DISK" | tail -n 1 | tr -d ' '; }

# A JSON string of about $1 bytes that does not compress.
bulk() { printf '"%s"' "$(head -c "$(($1 * 3 / 4))" /dev/urandom | base64 -w0)"; }

# Everything acknowledged so far must read back as it was written.
check_acknowledged() {
	local k
	while read -r k; do
		run opt-tree get t "$k"
		[ "$status" -eq 0 ] || fail "acknowledged key $k: exit $status: $output (acknowledged: $(ls "$TMP/want" | tr '\n' ' '))"
		[ "$(jq -c .value <<<"$output" | sha1sum)" = "$(jq -c .value "$TMP/want/$k" | sha1sum)" ] ||
			fail "key $k reads back changed"
	done < <(ls "$TMP/want")
	run opt-diary read d
	assert_success
	assert_output "$(cat "$TMP/want-d")"
}

@test "a full disk: writes exit 7 with a clear message; everything before stays; freeing space makes writes work again" {
	mkdir -p "$TMP/want"
	: >"$TMP/want-d"
	# some acknowledged history first: plain puts, appends, and a
	# transaction over the tree and the diary
	for i in 1 2 3 4 5; do
		opt-tree put t "k$i" "{\"i\":$i}" >/dev/null
		echo "{\"key\":\"k$i\",\"value\":{\"i\":$i}}" >"$TMP/want/k$i"
		opt-diary append d "{\"i\":$i}" >/dev/null
		echo "{\"i\":$i}" >>"$TMP/want-d"
	done
	run opt-log commit <<<'{"collections": {"d": [{"type": "append", "entry": "multi"}], "t": [{"type": "put", "key": "multi", "value": 1}]}}'
	assert_success
	echo '{"key":"multi","value":1}' >"$TMP/want/multi"
	echo '"multi"' >>"$TMP/want-d"

	# fill the disk with a scratch file but for 256 KiB, then put values
	# of 30 KB until a put fails
	dd if=/dev/zero of="$DISK/scratch" bs=1k count=$(($(avail) - 256)) 2>/dev/null
	[ "$(avail)" -le 260 ]
	failed=
	for key in big{1..60}; do
		bulk 30000 >"$TMP/value"
		run --separate-stderr opt-tree put t "$key" "$(cat "$TMP/value")"
		if [ "$status" -eq 0 ]; then
			echo "{\"key\":\"$key\",\"value\":$(cat "$TMP/value")}" >"$TMP/want/$key"
			continue
		fi
		failed=$key
		break
	done
	[ -n "$failed" ] || fail "60 puts of 30 KB fit in 256 KiB"
	echo "# the put of $failed failed (exit $status): $stderr" >&3
	[ "$status" -eq 7 ] || fail "a put on a full disk: exit $status ($stderr)"
	[ -z "$output" ] || fail "a failed put printed: $output"
	[[ $stderr == "opt-tree: "*"No space left on device"* ]] || fail "unclear message: $stderr"
	[ "$(wc -l <<<"$stderr")" -eq 1 ]
	run opt-tree get t "$failed"
	[ "$status" -eq 1 ]

	# the other writers: a large append, a large block, a transaction over
	# two collections whose primary part does not fit (its pend does)
	bulk 300000 >"$TMP/entry"
	run --separate-stderr opt-diary append d <"$TMP/entry"
	[ "$status" -eq 7 ] || fail "opt-diary append: exit $status ($stderr)"
	[[ $stderr == "opt-diary: "*"No space left on device"* ]] || fail "$stderr"
	echo "{\"header\":{\"type\":\"x\"},\"data\":$(cat "$TMP/entry")}" >"$TMP/block"
	run --separate-stderr opt-block put -c blocks <"$TMP/block"
	[ "$status" -eq 7 ] || fail "opt-block put: exit $status ($stderr)"
	echo "{\"collections\": {\"d\": [{\"type\": \"append\", \"entry\": \"half\"}], \"t\": [{\"type\": \"put\", \"key\": \"half\", \"value\": $(cat "$TMP/entry")}]}}" >"$TMP/doc"
	run --separate-stderr opt-log commit <"$TMP/doc"
	[ "$status" -eq 7 ] || fail "opt-log commit: exit $status ($stderr)"
	[[ $stderr == "opt-log: "*"No space left on device"* ]] || fail "$stderr"
	[ -z "$output" ]

	# now the disk is full to the last block: even tiny writes fail, cleanly
	dd if=/dev/zero of="$DISK/scratch2" bs=4k 2>/dev/null || true
	[ "$(avail)" -eq 0 ]
	run --separate-stderr opt-tree put t tiny 1
	[ "$status" -eq 7 ] || fail "a tiny put on a full disk: exit $status ($stderr)"
	run --separate-stderr opt-diary append d '"tiny"'
	[ "$status" -eq 7 ] || fail "a tiny append on a full disk: exit $status ($stderr)"
	run --separate-stderr opt-log commit <<<'{"collections": {"d": [{"type": "append", "entry": "tiny"}], "t": [{"type": "put", "key": "tiny", "value": 1}]}}'
	[ "$status" -eq 7 ] || fail "a tiny transaction on a full disk: exit $status ($stderr)"

	# the store is whole, and everything acknowledged reads back -- on the
	# full disk
	fsck_ok
	run opt-log verify
	assert_success
	check_acknowledged
	run opt-diary count d
	assert_output 6
	# no temporary files were left behind
	run find "$OPT_STORE" \( -name 'tmp_*' -o -name '*.lock' \) ! -name opt-repack.lock
	assert_output ''
	# the transaction that did not fit was pended on d, not decided
	half=$(git --git-dir="$OPT_STORE" log --format=%B refs/opt/collections/d |
		awk '/^Opt-Trx: / { t = $2 } /^Opt-Status: pending/ { print t; exit }')
	if [ -n "$half" ]; then
		echo "# the transaction that did not fit was pended on d (to be aborted): $half" >&3
	else
		echo "# the transaction that did not fit was not even pended" >&3
	fi

	# free the space: writes work again, and what the failed transaction
	# left pending is resolved (aborted) by the next writer
	rm -f "$DISK/scratch" "$DISK/scratch2"
	sleep 0.3
	run opt-diary append d '"after"'
	assert_success
	echo '"after"' >>"$TMP/want-d"
	run opt-tree put t after 1
	assert_success
	echo '{"key":"after","value":1}' >"$TMP/want/after"
	run opt-log commit <<<'{"collections": {"d": [{"type": "append", "entry": "multi2"}], "t": [{"type": "put", "key": "multi2", "value": 2}]}}'
	assert_success
	echo '{"key":"multi2","value":2}' >"$TMP/want/multi2"
	echo '"multi2"' >>"$TMP/want-d"
	bulk 30000 >"$TMP/value"
	run opt-tree put t "$failed" "$(cat "$TMP/value")"
	assert_success
	echo "{\"key\":\"$failed\",\"value\":$(cat "$TMP/value")}" >"$TMP/want/$failed"
	check_acknowledged
	# all or nothing: the half-done transaction is in neither collection
	if [ -n "$half" ]; then
		run opt-log status "$half"
		assert_success
		assert_equal "$(jq -r .status <<<"$output")" aborted
	fi
	run opt-tree get t half
	[ "$status" -eq 1 ]
	run opt-diary read d
	refute_line '"half"'
	refute_line '"tiny"'
	run opt-tree get t tiny
	[ "$status" -eq 1 ]
	fsck_ok
	run opt-log verify
	assert_success
}

@test "a full disk under commit --each: the transactions before the failure stay, the rest are not committed" {
	dd if=/dev/zero of="$DISK/scratch" bs=1k count=$(($(avail) - 200)) 2>/dev/null
	for i in $(seq 1 30); do
		printf '{"collections": {"log": [{"type": "append", "entry": {"i": %d, "pad": %s}}], "kv": [{"type": "put", "key": %d, "value": %s}]}}\n' \
			"$i" "$(bulk 8000)" "$i" "$(bulk 8000)"
	done >"$TMP/docs"
	run --separate-stderr opt-log commit --each <"$TMP/docs"
	[ "$status" -eq 7 ] || fail "exit $status: $stderr"
	[[ $stderr == *"No space left on device"* ]] || fail "$stderr"
	n=${#lines[@]}
	[ "$n" -ge 1 ] && [ "$n" -lt 30 ] || fail "$n of 30 acknowledged"
	echo "# $n of 30 transactions fit" >&3
	rm -f "$DISK/scratch"
	sleep 0.3
	# a fresh write to each resolves what the failure left pending
	opt-diary append log '{"i": 0}' >/dev/null
	opt-tree put kv 0 0 >/dev/null
	run opt-diary count log
	assert_output $((n + 1))
	run opt-tree count kv
	assert_output $((n + 1))
	for ((i = 1; i <= n; i++)); do
		opt-tree get --json-keys kv "$i" >/dev/null || fail "acknowledged key $i is missing"
	done
	fsck_ok
	run opt-log verify
	assert_success
}
