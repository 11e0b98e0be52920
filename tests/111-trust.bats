#!/usr/bin/env bats
# Trust a team can live with: whole keys in messages, named keys, a reason
# for every refused collection, one bad collection that does not block the
# others, writers unrestricted until a store asks, and backups with plain
# git that restore.

load test_helper
load sync_helper

# The fields (jq) of the record of collection $1 among the lines of $output.
rec_of() { jq -r --arg c "$1" "select(.collection == \$c) | $2" <<<"$output"; }

# ---- keys, whole and named ----

@test "a refused entry names its author's key whole, ready to paste into opt-log trust" {
	opt-block init "$TMP/a" >/dev/null
	opt-diary -C "$TMP/a" append events '"by a"' >/dev/null
	opt-log -C "$TMP/a" restrict >/dev/null 2>&1 || true
	opt-block init "$TMP/b" >/dev/null
	opt-log -C "$TMP/b" restrict >/dev/null 2>&1 || true
	opt-sync -C "$TMP/b" remote add a "$TMP/a"
	run --separate-stderr opt-sync -C "$TMP/b" pull a
	assert_failure 4
	[[ $stderr == *"signed by key $(key_of "$TMP/a"), which this store does not trust"* ]] || fail "$stderr"
	# pasted as it stands, it works
	opt-log -C "$TMP/b" trust "$(key_of "$TMP/a")" --name a
	run opt-sync -C "$TMP/b" pull a
	assert_success
}

@test "clone --trust: NAME=KEY names the key, a bare KEY gets a name derived from it" {
	seed "$TMP/a"
	opt-block init "$TMP/k1" >/dev/null && opt-log -C "$TMP/k1" identity >/dev/null
	opt-block init "$TMP/k2" >/dev/null && opt-log -C "$TMP/k2" identity >/dev/null
	k1=$(key_of "$TMP/k1") k2=$(key_of "$TMP/k2")
	run --separate-stderr opt-sync clone "$TMP/a" "$TMP/c" --trust "alice=$k1,$k2"
	assert_success
	run opt-log -C "$TMP/c" trusted
	assert_line "{\"key\":\"$k1\",\"name\":\"alice\"}"
	assert_line "{\"key\":\"$k2\",\"name\":\"key-${k2:0:8}\"}"
	# the origin's own key, read by path, is "origin"
	assert_line "{\"key\":\"$(key_of "$TMP/a")\",\"name\":\"origin\"}"
	# a name without a key, or an empty name, is a usage error
	for bad in "alice=" "=$k1" "alice=nothex" "alice"; do
		run --separate-stderr opt-sync clone "$TMP/a" "$TMP/d" --trust "$bad"
		assert_failure 2
		[ ! -e "$TMP/d" ]
	done
}

# ---- why a collection failed ----

@test "verify: the \"reason\" of a failed collection tells an untrusted key from tampered data" {
	seed "$TMP/a"
	opt-log -C "$TMP/a" restrict >/dev/null 2>&1 || true
	# another store's collection, copied in with plain git: untrusted here
	opt-block init "$TMP/o" >/dev/null
	opt-tree -C "$TMP/o" put theirs k 1 >/dev/null
	git --git-dir="$TMP/o" push -q "$TMP/a" refs/opt/collections/theirs:refs/opt/collections/theirs 2>/dev/null
	# a block of users changed by hand, where the log recorded another
	GD=$TMP/a tamper users 2 edit_block "$(opt-block -C "$TMP/a" ls -c users | jq -r 'select(.type == "TRE") | .id')" '.x = 1'
	run --separate-stderr opt-log -C "$TMP/a" verify
	assert_failure 4
	[ "$(rec_of theirs '.ok, .reason')" = $'false\nuntrusted' ] || fail "$output"
	[ "$(rec_of users '.ok, .reason')" = $'false\ntampered' ] || fail "$output"
	[ "$(rec_of events '.ok, .reason')" = $'true\nnull' ] || fail "$output"
	[[ $stderr == *"signed by key $(key_of "$TMP/o"), which this store does not trust"* ]] || fail "$stderr"
}
