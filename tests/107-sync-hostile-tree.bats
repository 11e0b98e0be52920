#!/usr/bin/env bats
# opt-sync against a peer whose collection commits hold trees our writer
# never makes (entries outside blocks/, "..", ".git", names with '/',
# symbolic links, submodules, zero-padded modes, names that are no block
# ID of their fan-out directory, a large payload), in a revision the
# log's own checks do not look at: clone, fetch and pull refuse them
# (exit 4) before any ref moves, opt-log verify too; and what a refused
# fetch downloaded does not stay in the store.

load test_helper
load sync_helper
load servers

# Serve the stores under $TMP/srv with git daemon; sets GITURL to the base
# URL (as tests/101-opt-sync-servers.bats does).
start_git_daemon() {
	local port tries
	[ -x "$(git --exec-path)/git-daemon" ] || skip "git daemon is not available"
	mkdir -p "$TMP/srv"
	for tries in 1 2 3; do
		port=$(free_port) || skip "no free port"
		git daemon --reuseaddr --listen=127.0.0.1 --port="$port" --base-path="$TMP/srv" --export-all \
			--informative-errors "$TMP/srv" >"$TMP/daemon.log" 2>&1 &
		SERVER_PIDS+=($!)
		if wait_port "$port"; then
			GITURL="git://127.0.0.1:$port"
			ignore_libgit2_leaks
			return 0
		fi
	done
	skip "git daemon did not start: $(cat "$TMP/daemon.log")"
}

# ---- building trees as a hostile peer can ----

# Tree entries of tree $1 as "MODE NAME SHA" lines (modes as git writes
# them: no leading zero).
ls_raw() {
	G ls-tree "$1" | while read -r mode type sha name; do
		echo "${mode#0} $name $sha"
	done
}

# A tree from "MODE NAME SHA" lines on stdin, written as given: no sorting,
# no checks of names or modes.
mk_tree() {
	local mode name sha
	while read -r mode name sha; do
		printf '%s %s\0' "$mode" "$name"
		printf '%s' "$sha" | xxd -r -p
	done | G hash-object -t tree -w --literally --stdin
}

# Tree $1 with line $3 ("MODE NAME SHA") added in its directory $2 ("" the
# top, "blocks/a/b"); a directory that is not there is made.
add_entry() {
	local tree=$1 dir=$2 line=$3 first rest sub
	if [ -z "$dir" ]; then
		{ ls_raw "$tree"; echo "$line"; } | sort -k2,2 | mk_tree
		return
	fi
	first=${dir%%/*}
	rest=${dir#"$first"}
	rest=${rest#/}
	sub=$(G rev-parse -q --verify "$tree:$first" 2>/dev/null) || sub=$(printf '' | mk_tree)
	sub=$(add_entry "$sub" "$rest" "$line")
	{ ls_raw "$tree" | awk -v n="$first" '$2 != n'; echo "40000 $first $sub"; } | sort -k2,2 | mk_tree
}

# Revision $2 of collection $1 in store $GD with the tree function $3 ...
# makes of its tree (given as the last argument); the revisions after it
# keep their trees and are made again on top.
retree() {
	local coll=$1 rev=$2 ref=refs/opt/collections/$1 old n r c tree parent new
	shift 2
	old=$(G rev-parse "$ref")
	n=$(head_rev "$coll")
	c=$(G rev-parse "$old~$((n - rev))")
	tree=$("$@" "$(G rev-parse "$c^{tree}")")
	parent=$(G rev-parse -q --verify "$c^" || true)
	new=$(remake_commit "$c" "$tree" "$parent")
	for ((r = rev + 1; r <= n; r++)); do
		c=$(G rev-parse "$old~$((n - r))")
		new=$(remake_commit "$c" "$(G rev-parse "$c^{tree}")" "$new")
	done
	G update-ref "$ref" "$new" "$old"
}

blob() { printf '%s' "$1" | G hash-object -w --stdin; }
# A valid block ID that is not in the collection, beginning with $1.
ID=zzqqzzqqzzqqzzqqzzqqzzqqzz

# The hostile shapes: each a tree function and the entry the refusal names.
t_payload() { add_entry "$1" "" "100644 payload $(head -c 3000000 /dev/urandom | G hash-object -w --stdin)"; }
t_dotdot() { add_entry "$1" "blocks" "40000 .. $(G rev-parse "$1:blocks")"; }
t_dotgit() { add_entry "$1" "" "40000 .git $(G rev-parse "$1:blocks")"; }
t_slash() { add_entry "$1" "" "100644 a/b $(blob x)"; }
t_symlink() { add_entry "$1" "blocks/z/z" "120000 $ID $(blob /etc/passwd)"; }
t_gitlink() { add_entry "$1" "blocks/z/z" "160000 $ID $(G rev-parse "refs/opt/collections/users")"; }
t_tree_as_block() { add_entry "$1" "blocks/z/z" "40000 $ID $(G rev-parse "$1:blocks")"; }
t_wrong_dir() { add_entry "$1" "blocks/z/y" "100644 $ID $(blob '{}')"; }
t_not_an_id() { add_entry "$1" "blocks/z/z" "100644 zz.x $(blob '{}')"; }
t_exec() { add_entry "$1" "blocks/z/z" "100755 $ID $(blob '{}')"; }
t_padded() {
	ls_raw "$1" | sed 's/^40000 blocks /040000 blocks /' | mk_tree
}

# case name, tree function, what the message names
CASES=(
	"payload t_payload tree entry 'payload'"
	"dotdot t_dotdot tree entry 'blocks/..'"
	"dotgit t_dotgit tree entry '.git'"
	"slash t_slash tree entry 'a/b'"
	"symlink t_symlink tree entry 'blocks/z/z/$ID': mode 120000"
	"gitlink t_gitlink tree entry 'blocks/z/z/$ID': mode 160000"
	"tree t_tree_as_block tree entry 'blocks/z/z/$ID': mode 40000"
	"wrongdir t_wrong_dir tree entry 'blocks/z/y/$ID'"
	"notanid t_not_an_id tree entry 'blocks/z/z/zz.x'"
	"exec t_exec tree entry 'blocks/z/z/$ID': mode 100755"
	"padded t_padded tree entry 'blocks': mode 040000"
)

# A store $1 whose collection users has $2 revisions.
users_store() {
	local i
	opt-block init "$1" >/dev/null
	for ((i = 1; i <= $2; i++)); do opt-tree -C "$1" put users "k$i" "$i" >/dev/null; done
}

# The objects of store $1: loose count and size, packed count, packs.
objects_of() { git --git-dir="$1" count-objects -v | grep -v '^size-pack\|^prune-packable'; }

# ---- clone and opt-log verify ----

@test "hostile tree shapes in an old revision: opt-log verify and clone refuse each (exit 4), naming the revision and the entry" {
	users_store "$TMP/a" 2
	local c name fn want
	for c in "${CASES[@]}"; do
		name=${c%% *}
		fn=${c#* }
		want=${fn#* }
		fn=${fn%% *}
		rm -rf "$TMP/h" "$TMP/c"
		cp -a "$TMP/a" "$TMP/h"
		GD=$TMP/h
		retree users 1 "$fn"
		run --separate-stderr opt-log -C "$TMP/h" verify users
		echo "$name: verify: $stderr"
		assert_failure 4
		[[ $stderr == "opt-log: "*"revision 1: $want"* ]]
		run --separate-stderr opt-sync clone "$TMP/h" "$TMP/c"
		echo "$name: clone: $stderr"
		assert_failure 4
		[[ $stderr == *"remote 'origin': collection 'users' refused: revision 1: $want"* ]]
		[ ! -e "$TMP/c" ]
	done
	# the honest store clones, verifies and passes git fsck
	run opt-sync clone "$TMP/a" "$TMP/c"
	assert_success
	run opt-log -C "$TMP/c" verify
	assert_success
	fsck_ok "$TMP/c"
}

@test "hostile commits: a second parent, or one git fsck --strict would refuse, is refused" {
	users_store "$TMP/a" 2
	GD=$TMP/a
	local good side
	good=$(G rev-parse refs/opt/collections/users)
	# a merge of junk history into revision 2
	side=$(G commit-tree "$(printf '' | mk_tree)" -m junk)
	G cat-file commit "$good" | sed "s/^parent .*/&\nparent $side/" >"$TMP/c2"
	G update-ref refs/opt/collections/users "$(G hash-object -t commit -w --literally "$TMP/c2")"
	run --separate-stderr opt-log -C "$TMP/a" verify users
	assert_failure 4
	[[ $stderr == *"revision 2: its commit "*"2 parents"* ]]
	run --separate-stderr opt-sync clone "$TMP/a" "$TMP/c"
	assert_failure 4
	[[ $stderr == *"collection 'users' refused: revision 2: its commit "* ]]
	# an author git fsck --strict calls broken
	G cat-file commit "$good" | sed 's/^author .*/author mallory <m@x> 1 +0000 junk/' >"$TMP/c2"
	G update-ref refs/opt/collections/users "$(G hash-object -t commit -w --literally "$TMP/c2")"
	run --separate-stderr opt-log -C "$TMP/a" verify users
	assert_failure 4
	[[ $stderr == *"revision 2: its commit "*"author"* ]]
	G update-ref refs/opt/collections/users "$good"
	run opt-log -C "$TMP/a" verify users
	assert_success
}

# ---- fetch and pull after a good clone ----

@test "hostile tree shapes in new revisions: fetch and pull refuse each (exit 4), nothing local moves; the honest history then comes through" {
	users_store "$TMP/a" 2
	opt-sync clone "$TMP/a" "$TMP/b" >/dev/null
	opt-tree -C "$TMP/a" put users k3 3 >/dev/null
	opt-tree -C "$TMP/a" put users k4 4 >/dev/null
	GD=$TMP/a
	local c name fn want good before
	good=$(G rev-parse refs/opt/collections/users)
	before=$(refs_of "$TMP/b")
	for c in "${CASES[@]}"; do
		name=${c%% *}
		fn=${c#* }
		want=${fn#* }
		fn=${fn%% *}
		G update-ref refs/opt/collections/users "$good"
		retree users 3 "$fn"
		run --separate-stderr opt-sync -C "$TMP/b" fetch
		echo "$name: fetch: $stderr"
		assert_failure 4
		[[ $stderr == "opt-sync: remote 'origin': collection 'users' refused: revision 3: $want"* ]]
		[ "$before" = "$(refs_of "$TMP/b")" ]
		run --separate-stderr opt-sync -C "$TMP/b" pull
		assert_failure 4
		[[ $stderr == *"collection 'users' refused: revision 3: $want"* ]]
		[ "$before" = "$(refs_of "$TMP/b")" ]
	done
	G update-ref refs/opt/collections/users "$good"
	run opt-sync -C "$TMP/b" pull
	assert_success
	assert_line '{"remote":"origin","collection":"users","rev":4,"status":"fast-forward"}'
	run opt-log -C "$TMP/b" verify
	assert_success
}

# ---- what a refused fetch downloaded ----

# No quarantine or temporary file left in store $1.
no_leftovers() {
	run find "$1/objects" -name 'tmp_*' -o -name '*_git2_*' -o -name '*.tmp'
	assert_output ''
}

# Store $TMP/b, a clone of $1 (a remote URL) whose collection users (in
# store $2) then moves on to revision 4; the honest head in $good.
fetch_setup() {
	users_store "$2" 2
	opt-sync clone --trust "$(key_of "$2")" "$1" "$TMP/b" >/dev/null
	opt-tree -C "$2" put users k3 3 >/dev/null
	opt-tree -C "$2" put users k4 4 >/dev/null
	GD=$2
	good=$(G rev-parse refs/opt/collections/users)
}

# Fetch into $TMP/b is refused (exit 4, naming $1 in the message) and
# leaves its objects as they were ($before), passing git fsck --strict.
refused_leaves_nothing() {
	run --separate-stderr opt-sync -C "$TMP/b" fetch
	assert_failure 4
	[[ $stderr == *"remote 'origin': collection 'users' refused: "*"$1"* ]]
	[ "$before" = "$(objects_of "$TMP/b")" ]
	[ "$refs" = "$(refs_of "$TMP/b")" ]
	no_leftovers "$TMP/b"
	fsck_ok "$TMP/b"
}

@test "a refused fetch from a path keeps nothing it downloaded: the store's objects are as before and pass git fsck --strict" {
	local good before refs
	fetch_setup "$TMP/a" "$TMP/a"
	before=$(objects_of "$TMP/b")
	refs=$(refs_of "$TMP/b")
	# shapes git fsck --strict refuses, and a 3 MB payload
	retree users 3 t_payload
	refused_leaves_nothing "tree entry 'payload'"
	G update-ref refs/opt/collections/users "$good"
	retree users 3 t_dotgit
	refused_leaves_nothing "tree entry '.git'"
	G update-ref refs/opt/collections/users "$good"
	retree users 3 t_padded
	refused_leaves_nothing "tree entry 'blocks'"
	# a block changed behind the log's back
	G update-ref refs/opt/collections/users "$good"
	tamper users 4 edit_block "$(opt-block -C "$TMP/a" ls -c users | jq -r 'select(.type == "TL") | .id' | head -1)" \
		'.entries[0][1] = 99'
	refused_leaves_nothing "does not match the hash"
	# pull refuses the same way
	run opt-sync -C "$TMP/b" pull
	assert_failure 4
	[ "$before" = "$(objects_of "$TMP/b")" ]
	# gc keeps the store whole
	run opt-block -C "$TMP/b" gc
	assert_success
	fsck_ok "$TMP/b"
	# the honest history then comes through, and stays
	G update-ref refs/opt/collections/users "$good"
	run opt-sync -C "$TMP/b" pull
	assert_success
	assert_line '{"remote":"origin","collection":"users","rev":4,"status":"fast-forward"}'
	no_leftovers "$TMP/b"
	fsck_ok "$TMP/b"
	run opt-block -C "$TMP/b" gc
	assert_success
	run opt-log -C "$TMP/b" verify
	assert_success
	[ "$(opt-tree -C "$TMP/a" range users)" = "$(opt-tree -C "$TMP/b" range users)" ]
}

@test "a refused fetch over git's protocol keeps nothing it downloaded either" {
	start_git_daemon
	local good before refs
	fetch_setup "$GITURL/a" "$TMP/srv/a"
	before=$(objects_of "$TMP/b")
	refs=$(refs_of "$TMP/b")
	retree users 3 t_payload
	refused_leaves_nothing "tree entry 'payload'"
	G update-ref refs/opt/collections/users "$good"
	run opt-sync -C "$TMP/b" pull
	assert_success
	no_leftovers "$TMP/b"
	fsck_ok "$TMP/b"
	run opt-log -C "$TMP/b" verify
	assert_success
}

@test "a refused first fetch from a path, which copies the peer's packs, keeps none of them" {
	users_store "$TMP/a" 2
	GD=$TMP/a
	retree users 1 t_payload
	G repack -adq
	opt-block init "$TMP/b" >/dev/null
	opt-sync -C "$TMP/b" remote add origin "$TMP/a"
	opt-log -C "$TMP/b" trust "$(key_of "$TMP/a")" >/dev/null
	local before refs
	before=$(objects_of "$TMP/b")
	refs=$(refs_of "$TMP/b")
	run --separate-stderr opt-sync -C "$TMP/b" fetch
	assert_failure 4
	[[ $stderr == *"collection 'users' refused: revision 1: tree entry 'payload'"* ]]
	[ "$before" = "$(objects_of "$TMP/b")" ]
	[ "$refs" = "$(refs_of "$TMP/b")" ]
	no_leftovers "$TMP/b"
	fsck_ok "$TMP/b"
}
