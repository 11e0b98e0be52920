#!/usr/bin/env bats
# Trust a team can live with: whole keys in messages, named keys, a reason
# for every refused collection, one bad collection that does not block the
# others, writers unrestricted until a store asks, and backups with plain
# git that restore.

load test_helper
load sync_helper
load servers

# Serve the stores under $TMP/srv with git daemon (push enabled); sets
# GITURL to the base URL (as tests/101-opt-sync-servers.bats does).
start_git_daemon() {
	local port tries
	[ -x "$(git --exec-path)/git-daemon" ] || skip "git daemon is not available"
	mkdir -p "$TMP/srv"
	for tries in 1 2 3; do
		port=$(free_port) || skip "no free port"
		git daemon --reuseaddr --listen=127.0.0.1 --port="$port" --base-path="$TMP/srv" --export-all \
			--enable=receive-pack --informative-errors "$TMP/srv" >"$TMP/daemon.log" 2>&1 &
		SERVER_PIDS+=($!)
		if wait_port "$port"; then
			GITURL="git://127.0.0.1:$port"
			ignore_libgit2_leaks
			return 0
		fi
	done
	skip "git daemon did not start: $(cat "$TMP/daemon.log")"
}

# The fields (jq) of the record of collection $1 among the lines of $output.
rec_of() { jq -r --arg c "$1" "select(.collection == \$c) | $2" <<<"$output"; }

# ---- keys, whole and named ----

@test "a refused entry names its author's key whole, ready to paste into opt-log trust" {
	opt-block init "$TMP/a" >/dev/null
	opt-diary -C "$TMP/a" append events '"by a"' >/dev/null
	opt-block init "$TMP/b" >/dev/null
	opt-log -C "$TMP/b" restrict >/dev/null
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
	opt-log -C "$TMP/a" restrict >/dev/null
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

# ---- one bad collection does not block the others ----

@test "pull and push carry on past a collection that does not verify: it is reported (reason), the rest syncs, exit 4" {
	seed "$TMP/hub"
	opt-sync clone "$TMP/hub" "$TMP/b" >/dev/null
	# the hub's events get a revision, then it is tampered with there
	opt-diary -C "$TMP/hub" append events '{"n":3}' >/dev/null
	GD=$TMP/hub tamper events 2 edit_block "$(opt-block -C "$TMP/hub" ls -c events | jq -r 'select(.type == "DIH") | .id')" '.x = 1'
	opt-tree -C "$TMP/hub" put users carol '{"age":50}' >/dev/null
	local before_events
	before_events=$(git --git-dir="$TMP/b" rev-parse refs/opt/collections/events)
	run --separate-stderr opt-sync -C "$TMP/b" pull
	assert_failure 4
	[ "$(rec_of events '.status, .reason')" = $'skipped\ntampered' ] || fail "$output"
	[ "$(rec_of users '.status')" = fast-forward ] || fail "$output"
	[[ $stderr == *"collection 'events'"* ]] || fail "$stderr"
	run opt-tree -C "$TMP/b" get users carol
	assert_success
	[ "$(git --git-dir="$TMP/b" rev-parse refs/opt/collections/events)" = "$before_events" ]
	[ -z "$(git --git-dir="$TMP/b" for-each-ref refs/opt/incoming/)" ]
	# b writes to users and things; its push takes them, reports events, exit 4
	opt-tree -C "$TMP/b" put users dave '{"age":60}' >/dev/null
	opt-block -C "$TMP/b" rm -c things "$B" >/dev/null
	run --separate-stderr opt-sync -C "$TMP/b" push
	assert_failure 4
	[ "$(rec_of users '.status')" = pushed ] || fail "$output"
	[ "$(rec_of things '.status')" = pushed ] || fail "$output"
	[ "$(rec_of events '.status, .reason')" = $'skipped\ntampered' ] || fail "$output"
	run opt-tree -C "$TMP/hub" get users dave
	assert_success
	# fetch says the same
	run --separate-stderr opt-sync -C "$TMP/b" fetch
	assert_failure 4
	[ "$(rec_of events '.status, .reason')" = $'skipped\ntampered' ] || fail "$output"
	run opt-log -C "$TMP/b" verify
	assert_success
}

# ---- writers not restricted until a store asks ----

# The hub $1 and two clones of it by URL $2 (a path or git://) in $TMP/a
# and $TMP/b; both write to users and events, push, pull: no trust
# command anywhere.
hub_and_two_clones() {
	local hub=$1 url=$2
	opt-tree -C "$hub" put users alice 1 >/dev/null
	opt-sync clone "$url" "$TMP/a" >/dev/null
	opt-sync clone "$url" "$TMP/b" >/dev/null
	opt-tree -C "$TMP/a" put users from-a 1 >/dev/null
	opt-diary -C "$TMP/a" append events '"a"' >/dev/null
	opt-tree -C "$TMP/b" put users from-b 2 >/dev/null
	opt-diary -C "$TMP/b" append events '"b"' >/dev/null
	run --separate-stderr opt-sync -C "$TMP/a" push
	assert_success
	run --separate-stderr opt-sync -C "$TMP/b" push
	assert_success
	run --separate-stderr opt-sync -C "$TMP/a" pull
	assert_success
	[ "$(opt-tree -C "$TMP/a" range users)" = "$(opt-tree -C "$TMP/b" range users)" ]
	run opt-tree -C "$TMP/a" get users from-b
	assert_success
	# a third clone takes everything
	run --separate-stderr opt-sync clone "$url" "$TMP/c"
	assert_success
	[ "$(content_of "$TMP/c")" = "$(content_of "$TMP/a")" ]
	for s in "$hub" "$TMP/a" "$TMP/b" "$TMP/c"; do
		run opt-log -C "$s" verify
		assert_success
	done
	# every entry names its author
	[ "$(opt-log -C "$TMP/c" show users | jq -r .author | sort -u | wc -l)" -eq 3 ]
}

@test "a hub and two clones that both write work with no trust command (by path)" {
	opt-block init "$TMP/hub" >/dev/null
	hub_and_two_clones "$TMP/hub" "$TMP/hub"
	run opt-log -C "$TMP/a" restrict --show
	assert_output '{"restricted":false}'
}

@test "a hub and two clones that both write work with no trust command (over git://)" {
	start_git_daemon
	opt-block init "$TMP/srv/hub" >/dev/null
	hub_and_two_clones "$TMP/srv/hub" "$GITURL/hub"
}

@test "a writer's store pushed to a hub, then cloned from it, needs no trust command" {
	opt-block init "$TMP/hub" >/dev/null
	opt-block init "$TMP/w" >/dev/null
	opt-tree -C "$TMP/w" put users x 1 >/dev/null
	opt-sync -C "$TMP/w" remote add hub "$TMP/hub"
	run --separate-stderr opt-sync -C "$TMP/w" push hub
	assert_success
	run --separate-stderr opt-sync clone "$TMP/hub" "$TMP/c"
	assert_success
	run opt-tree -C "$TMP/c" get users x
	assert_success
}

@test "an open store still refuses what does not verify: a forged signature, a key that did not sign" {
	seed "$TMP/hub"
	opt-sync clone "$TMP/hub" "$TMP/b" >/dev/null
	opt-diary -C "$TMP/hub" append events '{"n":3}' >/dev/null
	GD=$TMP/hub
	# the entry claims another author: the signature does not check for it
	tamper events 2 edit_log_tail ".entries[-1].author = \"$(printf 'a%.0s' $(seq 64))\""
	run --separate-stderr opt-sync -C "$TMP/b" pull
	assert_failure 4
	[ "$(rec_of events '.status, .reason')" = $'skipped\ntampered' ] || fail "$output"
	run opt-diary -C "$TMP/b" count events
	assert_output 2
}

@test "restricted: entries by unlisted keys are refused on pull (the rest syncs); verify on a hub tells them from corruption" {
	seed "$TMP/hub"
	opt-sync clone "$TMP/hub" "$TMP/w" >/dev/null
	opt-diary -C "$TMP/w" append events '"by w"' >/dev/null
	opt-sync -C "$TMP/w" push >/dev/null
	# one command restricts a store to its own key and the listed ones
	opt-sync clone "$TMP/hub" "$TMP/r" >/dev/null
	run opt-log -C "$TMP/r" restrict
	assert_output '{"restricted":true}'
	opt-diary -C "$TMP/w" append events '"again"' >/dev/null
	opt-tree -C "$TMP/hub" put users carol 1 >/dev/null
	opt-sync -C "$TMP/w" push >/dev/null
	run --separate-stderr opt-sync -C "$TMP/r" pull
	assert_failure 4
	[ "$(rec_of events '.status, .reason')" = $'skipped\nuntrusted' ] || fail "$output"
	[ "$(rec_of users .status)" = fast-forward ] || fail "$output"
	[[ $stderr == *"signed by key $(key_of "$TMP/w"), which this store does not trust"* ]] || fail "$stderr"
	# the hub, restricted, accepted the push (a path peer is written as a
	# directory); its verify says which entries are by keys it was not
	# told to trust, apart from damaged data
	opt-log -C "$TMP/hub" restrict >/dev/null
	run --separate-stderr opt-log -C "$TMP/hub" verify
	assert_failure 4
	[ "$(rec_of events '.ok, .reason')" = $'false\nuntrusted' ] || fail "$output"
	[ "$(rec_of users '.ok')" = true ] || fail "$output"
	# trusting the writer (one command per store) makes both whole
	opt-log -C "$TMP/hub" trust "$(key_of "$TMP/w")" --name w
	run opt-log -C "$TMP/hub" verify
	assert_success
	opt-log -C "$TMP/r" trust "$(key_of "$TMP/w")" --name w
	run opt-sync -C "$TMP/r" pull
	assert_success
	run opt-diary -C "$TMP/r" read events --reverse --limit 1
	assert_output '"again"'
	# and --off opens the writers again
	run opt-log -C "$TMP/hub" restrict --off
	assert_output '{"restricted":false}'
}

@test "restrict: usage and the state of a store written by an earlier version" {
	opt-block init "$TMP/s" >/dev/null
	run opt-log -C "$TMP/s" restrict --show
	assert_output '{"restricted":false}'
	run --separate-stderr opt-log -C "$TMP/s" restrict --off --show
	assert_failure 2
	run --separate-stderr opt-log -C "$TMP/s" restrict extra
	assert_failure 2
	# the first trust makes the list and restricts the store
	opt-log -C "$TMP/s" trust "$(printf 'b%.0s' $(seq 64))" --name bee
	run opt-log -C "$TMP/s" restrict --show
	assert_output '{"restricted":true}'
	# --off opens it and keeps the names; trusting more keeps it open
	opt-log -C "$TMP/s" restrict --off >/dev/null
	opt-log -C "$TMP/s" trust "$(printf 'd%.0s' $(seq 64))" --name dee
	run opt-log -C "$TMP/s" restrict --show
	assert_output '{"restricted":false}'
	run opt-log -C "$TMP/s" trusted
	assert_line --partial '"name":"bee"'
	# a list written before "writers" lines existed, naming a key: restricted
	printf '%s old\n' "$(printf 'c%.0s' $(seq 64))" >"$TMP/s/opt-trusted"
	run opt-log -C "$TMP/s" restrict --show
	assert_output '{"restricted":true}'
}

# ---- backup and restore with plain git ----

@test "backup by git clone --mirror: it opens as a store, verifies, and opt-sync clone restores it" {
	seed "$TMP/hub"
	opt-sync clone "$TMP/hub" "$TMP/w" >/dev/null
	opt-diary -C "$TMP/w" append events '"by w"' >/dev/null
	opt-sync -C "$TMP/w" push >/dev/null
	git clone -q --mirror "$TMP/hub" "$TMP/backup.git"
	# no secret key was copied
	[ ! -e "$TMP/backup.git/opt-identity" ]
	run --separate-stderr opt-log -C "$TMP/backup.git" verify
	assert_success
	[ "$(content_of "$TMP/backup.git")" = "$(content_of "$TMP/hub")" ]
	run --separate-stderr opt-sync clone "$TMP/backup.git" "$TMP/restored"
	assert_success
	[ "$(content_of "$TMP/restored")" = "$(content_of "$TMP/hub")" ]
	run opt-log -C "$TMP/restored" verify
	assert_success
	fsck_ok "$TMP/restored"
	# without the hub's key, the restored store signs with a new identity
	opt-tree -C "$TMP/restored" put users after 1 >/dev/null
	[ "$(key_of "$TMP/restored")" != "$(key_of "$TMP/hub")" ]
	[ "$(opt-log -C "$TMP/restored" show users | jq -r .author | tail -n 1)" = "$(key_of "$TMP/restored")" ]
	# and the hub takes what it writes, with no trust command
	opt-sync -C "$TMP/restored" remote add hub "$TMP/hub"
	run --separate-stderr opt-sync -C "$TMP/restored" push hub
	assert_success
	run opt-tree -C "$TMP/hub" get users after
	assert_success
	# the mirror itself, given back the key, is the hub again
	cp -p "$TMP/hub/opt-identity" "$TMP/backup.git/"
	run opt-tree -C "$TMP/backup.git" put users more 1
	assert_success
	[ "$(opt-log -C "$TMP/backup.git" show users | jq -r .author | tail -n 1)" = "$(key_of "$TMP/hub")" ]
}

@test "backup by git bundle: cloned back with git, it restores with opt-sync clone" {
	seed "$TMP/hub"
	git --git-dir="$TMP/hub" bundle create "$TMP/backup.bundle" --all 2>/dev/null
	git clone -q --mirror "$TMP/backup.bundle" "$TMP/from-bundle.git"
	run --separate-stderr opt-sync clone "$TMP/from-bundle.git" "$TMP/restored"
	assert_success
	[ "$(content_of "$TMP/restored")" = "$(content_of "$TMP/hub")" ]
	run opt-log -C "$TMP/restored" verify
	assert_success
}

@test "a plain git repository is still no store: not one made by a mirror of another git repository" {
	git init -q --bare "$TMP/plain.git"
	run --separate-stderr opt-log -C "$TMP/plain.git" verify
	assert_failure 7
	[[ $stderr == *"not an optimystic store"* ]] || fail "$stderr"
}

@test "a secret key file others may read is not used (exit 7, naming chmod 600); the store reads and verifies" {
	opt-block init "$TMP/s" >/dev/null
	opt-tree -C "$TMP/s" put users a 1 >/dev/null
	assert_equal "$(stat -c %a "$TMP/s/opt-identity")" 600
	chmod 644 "$TMP/s/opt-identity"
	local before
	before=$(refs_of "$TMP/s")
	run --separate-stderr opt-tree -C "$TMP/s" put users b 2
	assert_failure 7
	[[ $stderr == *"may be read by others (mode 0644)"*"chmod 600"* ]] || fail "$stderr"
	[ "$before" = "$(refs_of "$TMP/s")" ]
	run opt-tree -C "$TMP/s" get users a
	assert_success
	opt-log -C "$TMP/s" restrict >/dev/null
	run opt-log -C "$TMP/s" verify
	assert_success
	chmod 600 "$TMP/s/opt-identity"
	run opt-tree -C "$TMP/s" put users b 2
	assert_success
}
