#!/usr/bin/env bats
# Trust a team can live with: whole keys in messages, named keys, a reason
# for every refused collection, one bad collection that does not block the
# others, writers unrestricted until a store asks, and backups with plain
# git that restore.

load test_helper
load sync_helper

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
