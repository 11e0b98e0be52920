#!/usr/bin/env bats
# opt-block gc: what the refs reach goes into one pack; unreachable objects
# (race losers, collections whose ref went) older than the grace period
# (--prune, default two weeks) are removed, younger ones kept with their
# times; what killed writers left (temporary files, quarantines) goes; a
# store that cannot be written is an error, not a success.

load test_helper

export OPT_FSYNC=0
export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@example.org GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@example.org

teardown() {
	cd /
	if [ -n "${RO:-}" ]; then umount "$RO" 2>/dev/null || true; fi
	[ -n "${TMP:-}" ] && rm -rf "$TMP"
}

G() { git --git-dir="$OPT_STORE" "$@"; }

# Unreachable objects of the store, as git counts them.
unreachable() { G fsck --unreachable --no-reflogs --no-progress 2>/dev/null | grep -c '^unreachable ' || true; }

# Collections keep (kept) and a collection $1 whose ref is then deleted:
# its objects are what a race loser leaves, unreachable.
drop_coll() {
	opt-tree put "$1" a 1 >/dev/null
	opt-tree put "$1" b 2 >/dev/null
	G update-ref -d "refs/opt/collections/$1"
}

# Every file under the store's objects/ looks last written $1 ago.
age_all() { find "$OPT_STORE/objects" -type f -exec touch -d "$1 ago" {} +; }

@test "gc removes unreachable objects older than two weeks, keeps younger ones and all that refs reach" {
	opt-tree put keep x 1 >/dev/null
	opt-tree put keep y 2 >/dev/null
	drop_coll old
	age_all "15 days"
	drop_coll young
	local before n
	before=$(opt-tree range keep)
	n=$(unreachable)
	[ "$n" -gt 10 ]
	run opt-block gc
	assert_success
	[ "$(jq .pruned <<<"$output")" -gt 0 ]
	[ "$(jq .unreachable <<<"$output")" -gt 0 ]
	[ "$(jq .unreachable <<<"$output")" -lt "$n" ]
	# the young ones stay, in a pack of their own with their times
	[ "$(unreachable)" = "$(jq .unreachable <<<"$output")" ]
	ls "$OPT_STORE"/objects/pack/*.mtimes
	fsck_ok
	run opt-log verify
	assert_success
	[ "$(opt-tree range keep)" = "$before" ]
	# never: nothing goes; now: every unreachable object goes
	run opt-block gc --prune=never
	assert_success
	[ "$(unreachable)" -gt 0 ]
	run opt-block gc --prune now
	assert_success
	[ "$(jq .unreachable <<<"$output")" = 0 ]
	[ "$(unreachable)" = 0 ]
	[ "$(jq .packs <<<"$output")" = 1 ]
	fsck_ok
	run opt-log verify
	assert_success
	[ "$(opt-tree range keep)" = "$before" ]
}

@test "gc judges a kept unreachable object by its own time, not its pack's" {
	opt-tree put keep x 1 >/dev/null
	drop_coll young
	run opt-block gc
	assert_success
	[ "$(jq .unreachable <<<"$output")" -gt 0 ]
	sleep 2
	# written again (a new pack file), the objects keep their time
	opt-tree put keep y 2 >/dev/null
	run opt-block gc
	assert_success
	[ "$(jq .pruned <<<"$output")" = 0 ]
	sleep 2
	run opt-block gc --prune=3s
	assert_success
	[ "$(jq .pruned <<<"$output")" -gt 0 ]
	[ "$(unreachable)" = 0 ]
	fsck_ok
}

@test "gc keeps what the tracking refs of remotes reach, and loose objects a ref reaches go into the pack" {
	opt-tree put users a 1 >/dev/null
	opt-sync clone "$OPT_STORE" "$TMP/b" >/dev/null
	opt-tree put users b 2 >/dev/null
	opt-sync -C "$TMP/b" fetch >/dev/null
	# a revision written with plain git: loose objects
	local c
	c=$(git --git-dir="$TMP/b" commit-tree -p refs/opt/remotes/origin/users \
		-m "Opt-Rev: 3" "refs/opt/remotes/origin/users^{tree}" </dev/null)
	git --git-dir="$TMP/b" update-ref refs/opt/sync/test "$c"
	find "$TMP/b/objects" -type f -exec touch -d "30 days ago" {} +
	run opt-block -C "$TMP/b" gc --prune=now
	assert_success
	[ "$(jq .packs <<<"$output")" = 1 ]
	[ -z "$(find "$TMP/b/objects" -path '*/objects/??/*')" ]
	git --git-dir="$TMP/b" cat-file -e "$c"
	fsck_ok "$TMP/b"
	run opt-sync -C "$TMP/b" pull
	assert_success
	run opt-tree -C "$TMP/b" get users b
	assert_output '{"key":"b","value":2}'
	run opt-log -C "$TMP/b" verify
	assert_success
}

@test "gc removes what a killed gc, writer or fetch left: temporary files and quarantines" {
	opt-tree put keep x 1 >/dev/null
	opt-tree put keep y 2 >/dev/null
	local P=$OPT_STORE/objects/pack gone hex
	gone=$(sh -c 'echo $$')
	hex=$(printf '%040d' 7)
	# a killed gc's pack and index (named for its process), a killed
	# libgit2 indexer's, a killed fetch's quarantine; and one being
	# written right now by a live process, which stays
	head -c 5000 /dev/urandom >"$P/tmp_pack-$hex.pack_$gone"
	head -c 500 /dev/urandom >"$P/tmp_pack-$hex.idx_99999999"
	head -c 5000 /dev/urandom >"$P/pack_git2_AbCdEf"
	touch -d "2 hours ago" "$P/pack_git2_AbCdEf"
	mkdir -p "$OPT_STORE/objects/tmp_objdir-opt-$gone-XyZ123/pack"
	head -c 5000 /dev/urandom >"$OPT_STORE/objects/tmp_objdir-opt-$gone-XyZ123/pack/pack-$hex.pack"
	# (with the killed fetch's incoming ref, which names an object of it)
	mkdir -p "$OPT_STORE/refs/opt/incoming/origin"
	echo "$hex" >"$OPT_STORE/refs/opt/incoming/origin/users"
	head -c 100 /dev/urandom >"$P/pack_git2_live01"
	head -c 100 /dev/urandom >"$P/tmp_pack-$hex.pack_$$"
	# git receive-pack's quarantines: one idle for two hours, one that a
	# push made two hours ago is still writing to
	local Q=$OPT_STORE/objects/tmp_objdir-incoming-
	mkdir -p "${Q}idle/pack" "${Q}busy/pack"
	head -c 100 /dev/urandom >"${Q}idle/pack/tmp_pack_1"
	head -c 100 /dev/urandom >"${Q}busy/pack/tmp_pack_2"
	touch -d "2 hours ago" "${Q}idle/pack/tmp_pack_1" "${Q}idle/pack" "${Q}idle" "${Q}busy/pack" "${Q}busy"
	run opt-block gc
	assert_success
	[ "$(jq .temporary <<<"$output")" = 5 ]
	run ls -A "$P"
	refute_output --partial "$gone"
	refute_output --partial 99999999
	refute_output --partial AbCdEf
	assert_output --partial pack_git2_live01
	assert_output --partial "tmp_pack-$hex.pack_$$"
	[ ! -e "$OPT_STORE/objects/tmp_objdir-opt-$gone-XyZ123" ]
	[ -z "$(G for-each-ref refs/opt/incoming/)" ]
	[ ! -e "${Q}idle" ]
	[ -e "${Q}busy/pack/tmp_pack_2" ]
	rm -r "$P/pack_git2_live01" "$P/tmp_pack-$hex.pack_$$" "${Q}busy"
	fsck_ok
	run opt-log verify
	assert_success
}

@test "gc on a read-only store fails with exit 7, saying so" {
	opt-tree put keep x 1 >/dev/null
	opt-tree put keep y 2 >/dev/null
	RO=$TMP/ro
	mkdir "$RO"
	mount --bind "$OPT_STORE" "$RO" 2>/dev/null || skip "cannot bind-mount here"
	if ! mount -o remount,bind,ro "$RO" 2>/dev/null; then
		umount "$RO"
		skip "cannot remount read-only here"
	fi
	run --separate-stderr opt-block -C "$RO" gc
	assert_failure 7
	[[ $stderr == "opt-block: cannot lock the store's packs "*"Read-only file system" ]]
	assert_output ''
	# reads still work
	run opt-tree -C "$RO" get keep x
	assert_success
}

@test "gc waits for a consolidation of another process, then gives up with exit 6" {
	opt-tree put keep x 1 >/dev/null
	flock "$OPT_STORE/objects/pack/opt-repack.lock" sleep 3 &
	sleep 0.3
	OPT_BUSY_TIMEOUT=200 run --separate-stderr opt-block gc
	assert_failure 6
	[[ $stderr == "opt-block: the store's packs are being rolled up by another process"* ]]
	wait
	run opt-block gc
	assert_success
}

@test "gc --prune: usage errors exit 2" {
	for bad in 2x -1d '' w 1.5d 99999999999999999999; do
		run --separate-stderr opt-block gc --prune="$bad"
		assert_failure 2
		[[ $stderr == "opt-block: invalid --prune '$bad'"* ]]
	done
	run opt-block gc --prune=90s
	assert_success
}

@test "gc --prune now keeps what HEAD names (the store's first commit): git log and fsck still work" {
	opt-tree put t k 1 >/dev/null
	head=$(G rev-parse HEAD)
	run opt-block gc --prune now
	assert_success
	G cat-file -e "$head"
	run G log --oneline -1
	assert_success
	run G fsck --strict --no-progress
	assert_success
}
