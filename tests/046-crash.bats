#!/usr/bin/env bats
# Transactions under crashes: processes killed at random points of the
# multi-collection commit protocol (docs/protocol.md), and at random
# moments, leave a store that is whole, where every acknowledged
# transaction is committed and every transaction is all or nothing.
#
# The loop is tests/tools/crashloop.py (its header says what each
# iteration and each check does).  OPT_CRASH_SEED=S repeats a run;
# OPT_CRASH_ITERATIONS=N changes its length.  Writes do not fsync here
# (OPT_FSYNC=0, unless OPT_CRASH_FSYNC=1): a killed process loses no page
# cache, so syncing changes nothing this test can see, and it triples the
# time a run takes.

load test_helper

sanitized() { [[ $OPT_BIN == *build-san/bin || $OPT_BIN == *build-san/bin/ ]]; }

# the sanitizer build is several times slower (and starts slower: the
# plain kills get a longer range of delays)
if sanitized; then
	CRASH_ITERATIONS=${OPT_CRASH_ITERATIONS:-150}
	CRASH_NOTE="sanitizer build: $CRASH_ITERATIONS"
	CRASH_KILL_MS=100
else
	CRASH_ITERATIONS=${OPT_CRASH_ITERATIONS:-1000}
	CRASH_NOTE="$CRASH_ITERATIONS"
	CRASH_KILL_MS=30
fi

@test "kill points at random ($CRASH_NOTE iterations): store whole, acknowledged transactions committed, all or nothing" {
	[ "${OPT_CRASH_FSYNC:-0}" = 1 ] || export OPT_FSYNC=0
	seed=${OPT_CRASH_SEED:-$((RANDOM * 32768 + RANDOM))}
	echo "# crash loop: seed $seed (OPT_CRASH_SEED=$seed repeats it), $CRASH_ITERATIONS iterations, OPT_BIN=$OPT_BIN" >&3
	start=$SECONDS
	run python3 "$TOP/tests/tools/crashloop.py" --bin "$OPT_BIN" --store "$OPT_STORE" \
		--iterations "$CRASH_ITERATIONS" --seed "$seed" --check-every 50 --ttl 50 --stale-lock-ms 100 \
		--kill-ms "$CRASH_KILL_MS"
	printf '%s\n' "$output" | grep '^# ' >&3 || true
	echo "# crash loop: $((SECONDS - start)) s" >&3
	assert_success
	# the last check passed: once more, by hand
	fsck_ok
	run opt-log verify
	assert_success
	[ "$(grep -c '"ok":true' <<<"$output")" -eq 5 ]
	# and the histories, pends, reverts and abort records included, are one
	# serial order whose replay is the content
	run python3 "$TOP/tests/tools/serial.py" --bin "$OPT_BIN" --store "$OPT_STORE"
	printf '%s\n' "$output" | grep '^# ' >&3 || true
	assert_success
}
