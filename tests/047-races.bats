#!/usr/bin/env bats
# Concurrent transactions over overlapping collections: 8 writers, each
# with a mix of transactions over one collection and over two or three of
# 3 trees and 2 diaries (tests/tools/racer.py).  Every acknowledged
# transaction is there exactly once, the logs verify, and each
# collection's history is a valid serial order that agrees with the others
# (tests/tools/serial.py).  OPT_RACE_SEED=S repeats the workloads (not the
# interleaving).

load test_helper

sanitized() { [[ $OPT_BIN == *build-san/bin || $OPT_BIN == *build-san/bin/ ]]; }

RACE_WORKERS=8
if sanitized; then
	RACE_COUNT=${OPT_RACE_COUNT:-40}
	RACE_NOTE="sanitizer build: $RACE_WORKERS processes x $RACE_COUNT"
else
	RACE_COUNT=${OPT_RACE_COUNT:-250}
	RACE_NOTE="$RACE_WORKERS processes x $RACE_COUNT"
fi

@test "races ($RACE_NOTE transactions, single and multi-collection): all acknowledged once, logs verify, one serial order" {
	seed=${OPT_RACE_SEED:-$((RANDOM * 32768 + RANDOM))}
	echo "# races: seed $seed (OPT_RACE_SEED=$seed), $RACE_WORKERS workers x $RACE_COUNT transactions, OPT_BIN=$OPT_BIN" >&3
	start=$SECONDS
	pids=()
	for ((w = 1; w <= RACE_WORKERS; w++)); do
		python3 "$TOP/tests/tools/racer.py" --bin "$OPT_BIN" --worker "$w" --count "$RACE_COUNT" \
			--seed "$seed" --acks "$TMP/acks.$w" 2>"$TMP/err.$w" &
		pids+=($!)
	done
	failed=0
	for ((w = 1; w <= RACE_WORKERS; w++)); do
		wait "${pids[w - 1]}" || { failed=1; cat "$TMP/err.$w"; }
	done
	echo "# races: the writers took $((SECONDS - start)) s" >&3
	acked=$(cat "$TMP"/acks.* | wc -l)
	multi=$(cat "$TMP"/acks.* | jq -s 'map(select(.colls | length > 1)) | length')
	echo "# races: $acked of $((RACE_WORKERS * RACE_COUNT)) acknowledged, $multi of them over several collections" >&3
	# a writer that failed went on: check what the failure left first, then
	# fail for it at the end
	[ "$failed" -eq 0 ] || cat "$TMP"/err.* | sed 's/^/# /' >&3
	fsck_ok
	run opt-log verify
	assert_success
	[ "$(grep -c '"ok":true' <<<"$output")" -eq 5 ]
	# each acknowledged transaction is there once, in exactly its collections;
	# the histories replay to the content, in one order
	run python3 "$TOP/tests/tools/serial.py" --bin "$OPT_BIN" --store "$OPT_STORE" --acks "$TMP"/acks.*
	printf '%s\n' "$output" | grep '^# ' >&3 || true
	assert_success
	# a pending revision left at a head (nothing needs to roll it forward)
	# belongs to a committed transaction
	for c in a-tree b-diary c-tree d-diary e-tree; do
		git --git-dir="$OPT_STORE" cat-file commit "refs/opt/collections/$c" >"$TMP/head"
		grep -q '^Opt-Status: pending' "$TMP/head" || continue
		trx=$(sed -n 's/^Opt-Trx: //p' "$TMP/head")
		run opt-log status "$trx"
		assert_success
		[ "$(jq -r .status <<<"$output")" = committed ] || fail "$c: pending head of $trx: $output"
	done
	# every transaction acknowledged
	[ "$failed" -eq 0 ] || fail "writers failed: $(cat "$TMP"/err.*)"
	[ "$acked" -eq $((RACE_WORKERS * RACE_COUNT)) ]
	# and once more through the readers: every marker of a diary once, the
	# count of every tree and diary what the acknowledgements add up to
	for d in b-diary d-diary; do
		want=$(cat "$TMP"/acks.* | jq -s "map(select(.colls | index(\"$d\"))) | length")
		run opt-diary count "$d"
		assert_output "$want"
		[ "$(opt-diary read "$d" | sort | uniq -d | wc -l)" -eq 0 ]
	done
	for t in a-tree c-tree e-tree; do
		want=$(cat "$TMP"/acks.* | jq -s "map(select(.colls | index(\"$t\"))) | length")
		have=$(opt-tree range "$t" --from w --before x | wc -l)
		[ "$have" -eq "$want" ] || fail "$t: $have marker keys, $want acknowledged"
	done
	echo "# races: $((SECONDS - start)) s in all" >&3
}

@test "serial.py catches a transaction that counts in only one of its collections" {
	opt-log commit --each <<'EOF' >/dev/null
{"collections": {"a": [{"type": "put", "key": "k", "value": 1}], "b": [{"type": "append", "entry": 1}]}}
{"collections": {"a": [{"type": "put", "key": "k", "value": 2}], "b": [{"type": "append", "entry": 2}]}}
EOF
	run python3 "$TOP/tests/tools/serial.py" --bin "$OPT_BIN" --store "$OPT_STORE"
	assert_success
	# move a's ref back one revision with plain git: the second transaction
	# counts in b only
	git --git-dir="$OPT_STORE" update-ref refs/opt/collections/a refs/opt/collections/a~1
	run python3 "$TOP/tests/tools/serial.py" --bin "$OPT_BIN" --store "$OPT_STORE"
	assert_failure
	assert_output --partial "counts in ['b'] only"
}
