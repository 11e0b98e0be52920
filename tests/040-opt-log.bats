#!/usr/bin/env bats
# opt-log: show the log entries of a collection, and verify every log
# against the revisions it accounts for -- including stores tampered with
# by plain git.

load test_helper

A=aaaaaaaaaaaaaaaaaaaaaaaaaa
B=bbbbbbbbbbbbbbbbbbbbbbbbbb
C=cccccccccccccccccccccccccc
D=dddddddddddddddddddddddddd

# git commit-tree wants an identity; HOME is empty
export GIT_AUTHOR_NAME=mallory GIT_AUTHOR_EMAIL=mallory@example.org
export GIT_COMMITTER_NAME=mallory GIT_COMMITTER_EMAIL=mallory@example.org

# ---- helpers: plain git on the store ----

G() { git --git-dir="$OPT_STORE" "$@"; }

# The head revision of collection $1 (its commit's Opt-Rev trailer).
head_rev() { G cat-file commit "refs/opt/collections/$1" | sed -n 's/^Opt-Rev: //p'; }

# The commit of revision $2 of collection $1.
rev_commit() { G rev-parse "refs/opt/collections/$1~$(($(head_rev "$1") - $2))"; }

# Where block $1 lives in a collection's tree.
bpath() { printf 'blocks/%s/%s/%s' "${1:0:1}" "${1:1:1}" "$1"; }

# The stored bytes of block $3 of collection $1 at revision $2.
blob_at() { G cat-file blob "$(rev_commit "$1" "$2"):$(bpath "$3")"; }

# The ID of the header block of collection $1.
header_id() { opt-block ls -c "$1" | jq -r 'select(.type == "COL" or .type == "TRE" or .type == "DIH") | .id'; }

# A commit like $1 (the same message, trailers and all) with tree $2 and
# parent $3 (none when empty); the message goes through sed script $4.
remake_commit() {
	G cat-file commit "$1" | sed '1,/^$/d' | sed -e "${4:-}" >"$TMP/msg"
	if [ -n "$3" ]; then
		G commit-tree "$2" -p "$3" -F "$TMP/msg"
	else
		G commit-tree "$2" -F "$TMP/msg"
	fi
}

# tamper COLL REV [CMD ARGS...]: rewrite revision REV of COLL the way
# anyone with git could.  CMD edits an index of REV's tree (GIT_INDEX_FILE
# is set, $TC is REV's commit, $TCOLL the collection); $MSG_SED, when
# set, edits REV's commit message; $NO_PARENT, when set, makes REV a
# commit without a parent.  The later revisions are made again on top
# (their own trees and messages), and the ref moves.
tamper() {
	local coll=$1 rev=$2 ref=refs/opt/collections/$1 old n r c tree parent new
	shift 2
	old=$(G rev-parse "$ref")
	n=$(head_rev "$coll")
	c=$(G rev-parse "$old~$((n - rev))")
	export GIT_INDEX_FILE="$TMP/tamper.index" TC=$c TCOLL=$coll
	rm -f "$GIT_INDEX_FILE"
	G read-tree "$c"
	if [ $# -gt 0 ]; then "$@"; fi
	tree=$(G write-tree)
	unset GIT_INDEX_FILE
	parent=$(G rev-parse -q --verify "$c^" || true)
	[ -z "${NO_PARENT:-}" ] || parent=
	new=$(remake_commit "$c" "$tree" "$parent" "${MSG_SED:-}")
	for ((r = rev + 1; r <= n; r++)); do
		c=$(G rev-parse "$old~$((n - r))")
		new=$(remake_commit "$c" "$(G rev-parse "$c^{tree}")" "$new")
	done
	G update-ref "$ref" "$new" "$old"
}

# Inside tamper: set block $1 to the bytes $2, or remove it.
put_blob() {
	local b
	b=$(printf '%s' "$2" | G hash-object -w --stdin)
	G update-index --add --cacheinfo "100644,$b,$(bpath "$1")"
}
rm_blob() { printf '0 %040d\t%s\n' 0 "$(bpath "$1")" | G update-index --index-info; }

# Inside tamper: block $1 through jq filter $2; the tail block of the log.
edit_block() { put_blob "$1" "$(G cat-file blob "$TC:$(bpath "$1")" | jq -c "$2")"; }
edit_log_tail() { edit_block "$(G cat-file blob "$TC:$(bpath "$(header_id "$TCOLL")")" | jq -r .tailId)" "$1"; }

# Inside tamper: change entry $1 (0-based) of the tail log block with jq
# filter $2 and give it the hash it then has (the SHA-256 of its canonical
# JSON without "hash", "sig" and "actions"; jq -cS is canonical for
# these entries).
rehash_entry() {
	local id blob h
	id=$(G cat-file blob "$TC:$(bpath "$(header_id "$TCOLL")")" | jq -r .tailId)
	blob=$(G cat-file blob "$TC:$(bpath "$id")" | jq -c ".entries[$1] |= ($2)")
	h=$(jq -cS ".entries[$1] | del(.hash, .sig, .actions)" <<<"$blob" | tr -d '\n' | sha256sum | cut -d' ' -f1)
	put_blob "$id" "$(jq -c ".entries[$1].hash = \"$h\"" <<<"$blob")"
}

# drop_rev COLL REV: remake the revisions after REV on top of REV - 1.
drop_rev() {
	local coll=$1 rev=$2 ref=refs/opt/collections/$1 old n r c new
	old=$(G rev-parse "$ref")
	n=$(head_rev "$coll")
	new=$(G rev-parse "$old~$((n - rev + 1))")
	for ((r = rev + 1; r <= n; r++)); do
		c=$(G rev-parse "$old~$((n - r))")
		new=$(remake_commit "$c" "$(G rev-parse "$c^{tree}")" "$new")
	done
	G update-ref "$ref" "$new" "$old"
}

# A collection "c" of 4 revisions: two blocks, a change, a deletion.
seed() {
	printf '%s\n' "{\"header\":{\"id\":\"$A\",\"type\":\"t\"},\"v\":1}" \
		"{\"header\":{\"id\":\"$B\",\"type\":\"t\"},\"v\":1}" | opt-block put -c c >/dev/null
	echo "{\"header\":{\"id\":\"$C\",\"type\":\"t\"},\"v\":2}" | opt-block put -c c >/dev/null
	echo '["v",0,0,3]' | opt-block apply -c c "$A" >/dev/null
	opt-block rm -c c "$B" >/dev/null
}

# verify must fail with exit 4, naming collection $1 and the message $2
# (a glob), and report the collection as not ok.
broken() {
	run --separate-stderr opt-log verify "$1"
	[ "$status" -eq 4 ] || fail "verify $1: exit $status, stderr: $stderr"
	# shellcheck disable=SC2053
	[[ $stderr == "opt-log: collection '$1': "$2 ]] || fail "verify $1: stderr: $stderr"
	[ "${#stderr_lines[@]}" -eq 1 ] || fail "verify $1: more than one line: $stderr"
	[[ $output == *"\"collection\":\"$1\""*'"ok":false'* ]] || fail "verify $1: stdout: $output"
}

# ---- show ----

@test "show prints one entry per revision, oldest first, hash-chained" {
	seed
	run --separate-stderr opt-log show c
	assert_success
	assert_equal "${#lines[@]}" 4
	assert_equal "$(jq -c .rev <<<"$output" | tr '\n' ' ')" "1 2 3 4 "
	# each entry: prior = the hash of the one before, "" for rev 1
	assert_equal "$(jq -r .prior <<<"${lines[0]}")" ""
	assert_equal "$(jq -r .prior <<<"${lines[1]}")" "$(jq -r .hash <<<"${lines[0]}")"
	assert_equal "$(jq -r .prior <<<"${lines[3]}")" "$(jq -r .hash <<<"${lines[2]}")"
	# the transaction IDs are those of the commits
	assert_equal "$(jq -r .trx <<<"${lines[2]}")" "$(G cat-file commit "$(rev_commit c 3)" | sed -n 's/^Opt-Trx: //p')"
	# blocks: the SHA-256 of each block written, as stored; null when deleted
	assert_equal "$(jq -r ".blocks.$A" <<<"${lines[0]}")" "$(blob_at c 1 "$A" | sha256sum | cut -d' ' -f1)"
	assert_equal "$(jq -r ".blocks.$A" <<<"${lines[2]}")" "$(blob_at c 3 "$A" | sha256sum | cut -d' ' -f1)"
	assert_equal "$(jq -c .blocks <<<"${lines[3]}")" "{\"$B\":null}"
	assert_equal "$(jq -c '.actions[0].type' <<<"${lines[3]}")" '"block.rm"'
	# every entry has its members (and may have more: "author", "sig", ...)
	for l in "${lines[@]}"; do
		assert_equal "$(jq -c '{rev, trx, time, actions, actionsHash, blocks, prior, hash} | map_values(type)' <<<"$l")" \
			'{"rev":"number","trx":"string","time":"number","actions":"array","actionsHash":"string","blocks":"object","prior":"string","hash":"string"}'
	done
	[ -z "$stderr" ]
}

@test "show --from, --to, --reverse, --limit and --rev select entries across log blocks" {
	# 70 revisions: the log spans three blocks of 32 entries
	for i in $(seq 1 70); do echo "{\"header\":{\"id\":\"$A\",\"type\":\"t\"},\"v\":$i}"; done |
		opt-block put -c many --each >/dev/null
	revs() { opt-log show many "$@" | jq -r .rev | tr '\n' ' '; }
	assert_equal "$(revs | wc -w)" 70
	assert_equal "$(revs --from 31 --to 34)" "31 32 33 34 "
	assert_equal "$(revs --from 66)" "66 67 68 69 70 "
	assert_equal "$(revs --to 3)" "1 2 3 "
	assert_equal "$(revs --reverse --to 3)" "3 2 1 "
	assert_equal "$(revs -r --from 68)" "70 69 68 "
	assert_equal "$(revs -r --from 30 --to 35)" "35 34 33 32 31 30 "
	assert_equal "$(revs --from 60 --limit 3)" "60 61 62 "
	assert_equal "$(revs -r -n 2)" "70 69 "
	assert_equal "$(revs -r --to 40 --limit=2)" "40 39 "
	assert_equal "$(revs --from 5 --to 5)" "5 "
	assert_equal "$(revs --rev 10 --from 8)" "8 9 10 "
	assert_equal "$(revs --rev 33 -r -n 2)" "33 32 "
	assert_equal "$(revs --rev 1)" "1 "
	# empty selections are not errors
	run --separate-stderr opt-log show many --from 71
	assert_success
	assert_output ''
	run --separate-stderr opt-log show many --limit 0
	assert_success
	assert_output ''
	run --separate-stderr opt-log show many --rev 5 --from 6
	assert_success
	assert_output ''
	# the entries at --rev are the entries of the log as it was
	assert_equal "$(opt-log show many --rev 20 --from 20)" "$(opt-log show many --from 20 --to 20)"
}

@test "show reads the logs of tree and diary collections" {
	command -v opt-tree >/dev/null || skip "opt-tree is not built"
	command -v opt-diary >/dev/null || skip "opt-diary is not built"
	printf '%s\n' '{"key":"a","value":1}' '{"key":"b","value":2}' | opt-tree put t >/dev/null
	opt-tree del t a >/dev/null
	run opt-log show t
	assert_success
	assert_equal "${#lines[@]}" 2
	assert_equal "$(jq -c '.actions' <<<"${lines[1]}")" '[{"key":"a","type":"del"}]'
	opt-diary append d '{"n":1}' '{"n":2}' >/dev/null
	opt-diary append d '{"n":3}' >/dev/null
	run opt-log show d --reverse --limit 1
	assert_success
	assert_equal "$(jq -c '[.rev, .actions]' <<<"$output")" '[2,[{"entry":{"n":3},"type":"append"}]]'
}

@test "show: bad input" {
	seed
	run --separate-stderr opt-log show nosuch
	assert_failure 1
	assert_equal "$stderr" "opt-log: no collection 'nosuch'"
	run --separate-stderr opt-log show c --rev 9
	assert_failure 1
	assert_equal "$stderr" "opt-log: collection 'c' has no revision 9 (latest is 4)"
	run --separate-stderr opt-log show c --from 3 --to 2
	assert_failure 2
	assert_equal "$stderr" "opt-log: --from 3 is after --to 2; try 'opt-log show --help'"
	local bad
	for bad in "--from 0" "--from x" "--to -1" "--to 2x" "--limit -1" "--limit many" "--rev 0" "--rev 1.5"; do
		# shellcheck disable=SC2086
		run --separate-stderr opt-log show c $bad
		[ "$status" -eq 2 ] || fail "show c $bad: exit $status"
		[[ $stderr == "opt-log: --"*"needs a whole number"*"; try 'opt-log show --help'" ]] || fail "show c $bad: $stderr"
		[ "${#stderr_lines[@]}" -eq 1 ] || fail "show c $bad: $stderr"
		[ -z "$output" ]
	done
	run --separate-stderr opt-log show
	assert_failure 2
	assert_equal "$stderr" "opt-log: no collection name given; try 'opt-log show --help'"
	run --separate-stderr opt-log show c d
	assert_failure 2
	run --separate-stderr opt-log show ../x
	assert_failure 2
	[[ $stderr == "opt-log: invalid collection name '../x'"* ]]
	run --separate-stderr opt-log show c --from
	assert_failure 2
	run --separate-stderr opt-log show c --reverse=yes
	assert_failure 2
	# no store: exit 7
	run --separate-stderr opt-log -C "$TMP/none" show c
	assert_failure 7
}

# ---- common behaviour ----

@test "--pretty, --compact, -q, --help, --version and --complete" {
	seed
	run opt-log show c --pretty --to 1
	assert_success
	assert_line --index 0 '{'
	assert_line --index 1 --regexp '^  "actions": \[$'
	run opt-log show c --to 1 --pretty --compact
	assert_success
	assert_equal "${#lines[@]}" 1
	run opt-log --store "$OPT_STORE" show c --from 4
	assert_success
	assert_output --partial '"rev":4'
	run env -u OPT_STORE opt-log -C "$OPT_STORE" verify c -q
	assert_success
	assert_output '{"collection":"c","entries":4,"rev":4,"ok":true}'
	run --separate-stderr opt-log --help
	assert_success
	assert_line --index 0 'usage: opt-log COMMAND [OPTIONS] [ARGS]'
	assert_line --regexp '^  show NAME '
	assert_line --regexp '^  verify \[NAME\.\.\. \| -\] '
	run --separate-stderr opt-log show -h
	assert_success
	# the usage, wrapped at 80 columns
	assert_equal "$(sed '/^$/q' <<<"$output" | tr '\n' ' ' | sed 's/  */ /g; s/ $//')" \
		'usage: opt-log show NAME [--from REV] [--to REV] [--reverse] [--limit N] [--rev N] [--follow] [--oneline | --format FMT]'
	assert_line --regexp '^  -n, --limit N '
	run opt-log --version
	assert_success
	assert_output --regexp '^opt-log [0-9]+\.[0-9]+\.[0-9]+( \([0-9a-f]+(-dirty)?\))?$'
	run opt-log --complete
	assert_success
	assert_line --index 0 show
	assert_line --index 1 verify
	assert_line -- --store
	run opt-log --complete show
	assert_success
	for o in --from= --to= --reverse --limit= --rev= --store= --pretty --compact --quiet --help --version; do
		assert_line -- "$o"
	done
	run --separate-stderr opt-log frobnicate
	assert_failure 2
	run --separate-stderr opt-log verify --from 1
	assert_failure 2
	assert_equal "$stderr" "opt-log: unknown option '--from'; try 'opt-log verify --help'"
	run --separate-stderr opt-log
	assert_failure 2
}

@test "a closed stdout is an error" {
	seed
	run bash -c 'opt-log show c >&-'
	assert_failure 7
	run bash -c 'opt-log verify >&-'
	assert_failure 7
}

# ---- verify: untouched stores ----

@test "verify: an untouched store checks out, collection by collection" {
	seed
	# group commits, transforms, many revisions and blocks
	for i in $(seq 1 40); do echo "{\"header\":{\"id\":\"$D\",\"type\":\"t\"},\"v\":$i}"; done |
		opt-block put -c each --each >/dev/null
	echo "{\"inserts\":{\"$A\":{\"header\":{\"id\":\"$A\",\"type\":\"t\"}}},\"deletes\":[\"$C\"]}" |
		opt-block transform -c c >/dev/null
	for i in $(seq 1 100); do echo "{\"n\":$i}"; done | opt-block put -c wide >/dev/null
	opt-block ls -c wide --type block | jq -r .id | head -n 30 | xargs opt-block rm -c wide >/dev/null
	run --separate-stderr opt-log verify
	assert_success
	assert_equal "${lines[0]}" '{"collection":"c","entries":5,"rev":5,"ok":true}'
	assert_equal "${lines[1]}" '{"collection":"each","entries":40,"rev":40,"ok":true}'
	assert_equal "${lines[2]}" '{"collection":"wide","entries":2,"rev":2,"ok":true}'
	assert_equal "${#lines[@]}" 3
	[ -z "$stderr" ]
	# named ones, in the order given
	run --separate-stderr opt-log verify wide c
	assert_success
	assert_equal "$(jq -r .collection <<<"$output" | tr '\n' ' ')" "wide c "
	# a store without collections: nothing to say
	opt-block init "$TMP/empty" >/dev/null
	run --separate-stderr opt-log -C "$TMP/empty" verify
	assert_success
	assert_output ''
}

@test "verify: tree and diary collections check out" {
	command -v opt-tree >/dev/null || skip "opt-tree is not built"
	command -v opt-diary >/dev/null || skip "opt-diary is not built"
	# enough keys for a tree of several levels, then deletions
	for i in $(seq 1 300); do echo "{\"key\":$i,\"value\":$i}"; done | opt-tree put t --capacity 4 >/dev/null
	for i in $(seq 1 80); do echo "$i"; done | opt-tree del t --json-keys - >/dev/null
	opt-tree put t k '"v"' >/dev/null
	for i in $(seq 1 70); do echo "{\"n\":$i}"; done | opt-diary append d >/dev/null
	opt-diary append d '{"n":71}' >/dev/null
	run --separate-stderr opt-log verify t d
	assert_success
	assert_line --index 0 '{"collection":"t","entries":3,"rev":3,"ok":true}'
	assert_line --index 1 '{"collection":"d","entries":2,"rev":2,"ok":true}'
}

@test "a big entry (a bulk load) is written once: later appends neither read nor rewrite its block" {
	for i in $(seq 1 300); do echo "{\"key\":\"k$i\",\"value\":$i}"; done | opt-tree put t >/dev/null
	for i in 1 2 3; do opt-tree put t "x$i" "$i" >/dev/null; done
	echo '{"key":"y","value":0}' | opt-tree put t >/dev/null
	big=""
	for id in $(opt-block ls -c t | jq -r 'select(.type == "LGD") | .id'); do
		if opt-block get -c t "$id" | jq -e '.entries[] | select(.rev == 1)' >/dev/null; then big=$id; fi
	done
	[ -n "$big" ]
	# one revision of that block: the one that wrote it
	run opt-block history -c t "$big"
	assert_success
	assert_equal "$(echo "$output" | wc -l)" 1
	assert_equal "$(echo "$output" | jq .rev)" 1
	run opt-log verify t
	assert_success
	run bash -c "opt-log show t | jq -c '[.rev, (.actions | length)]'"
	assert_output "$(printf '%s\n' '[1,300]' '[2,1]' '[3,1]' '[4,1]' '[5,1]')"
	fsck_ok
}

@test "verify after racing writers checks out" {
	local p
	for p in 1 2 3; do
		(for i in $(seq 1 8); do echo "{\"w\":$p,\"i\":$i}" | opt-block put -c race >/dev/null || exit 1; done) &
	done
	wait
	run opt-log verify race
	assert_success
	assert_output '{"collection":"race","entries":24,"rev":24,"ok":true}'
}

@test "verify: a collection that does not exist exits 1; the named others are verified" {
	seed
	run --separate-stderr opt-log verify nosuch c
	assert_failure 1
	assert_equal "$stderr" "opt-log: no collection 'nosuch'"
	assert_output '{"collection":"c","entries":4,"rev":4,"ok":true}'
	run --separate-stderr opt-log verify 'bad..name'
	assert_failure 2
}

# ---- verify: tampering with plain git ----

@test "tampering: a block rewritten at the revision that wrote it" {
	seed
	tamper c 2 put_blob "$C" "{\"header\":{\"collection\":\"c\",\"id\":\"$C\",\"type\":\"t\"},\"v\":20}"
	fsck_ok
	# the store still reads fine: only the log knows
	run opt-block get -c c --rev 2 "$C"
	assert_success
	assert_output --partial '"v":20'
	broken c "log entry rev 2: block '$C' does not match the hash the log recorded for it"
}

@test "tampering: a block changed at the head, written long before" {
	seed
	tamper c 4 edit_block "$C" '.v = 99'
	broken c "log entry rev 2: block '$C' does not match the hash the log recorded for it (at revision 4)"
}

@test "tampering: the same bytes in another form" {
	seed
	tamper c 3 put_blob "$A" "{\"v\":3,\"header\":{\"collection\":\"c\",\"id\":\"$A\",\"type\":\"t\"}}"
	broken c "log entry rev 3: block '$A' is not stored as canonical JSON"
}

@test "tampering: a deleted block put back, a block removed, a block added" {
	seed
	local clean
	clean=$(G rev-parse refs/opt/collections/c)
	tamper c 4 put_blob "$B" "$(blob_at c 1 "$B")"
	broken c "log entry rev 4: block '$B' was deleted, but revision 4 holds it"
	G update-ref refs/opt/collections/c "$clean"
	tamper c 4 rm_blob "$C"
	broken c "log entry rev 2: block '$C' that it wrote is missing at revision 4"
	G update-ref refs/opt/collections/c "$clean"
	tamper c 3 rm_blob "$A"
	broken c "log entry rev 3: block '$A' was written, but revision 3 does not hold it"
	G update-ref refs/opt/collections/c "$clean"
	tamper c 4 put_blob "$D" "{\"header\":{\"collection\":\"c\",\"id\":\"$D\",\"type\":\"t\"}}"
	broken c "revision 4: block '$D' is in the collection, but no log entry wrote it"
	G update-ref refs/opt/collections/c "$clean"
	run opt-log verify c
	assert_success
}

@test "tampering: the action of a log entry altered" {
	seed
	tamper c 4 edit_log_tail '.entries[2].actions[0].ops = [["v",0,0,4]]'
	broken c 'log entry rev 3: actionsHash mismatch (the actions were altered)'
}

@test "tampering: the last log entry dropped" {
	seed
	local clean
	clean=$(G rev-parse refs/opt/collections/c)
	tamper c 4 edit_log_tail '.entries |= .[:-1]'
	broken c 'log entry rev 3: the header says the log ends at rev 4'
	# a last entry without a revision: show still shows the others
	G update-ref refs/opt/collections/c "$clean"
	tamper c 4 edit_log_tail '.entries[-1].rev = "four"'
	broken c 'log entry rev 4: no integer "rev"'
	run opt-log show c --from 2
	assert_success
	assert_equal "$(jq -c .rev <<<"$output" | tr '\n' ' ')" '2 3 '
	run opt-log show c -r -n 2
	assert_success
	assert_equal "$(jq -c .rev <<<"$output" | tr '\n' ' ')" '"four" 3 '
}

@test "tampering: the hash of a log entry changed" {
	seed
	local clean
	clean=$(G rev-parse refs/opt/collections/c)
	tamper c 4 edit_log_tail '.entries[1].hash = ("0" * 64)'
	broken c 'log entry rev 2: hash mismatch'
	# a new time with its hash recomputed: the entry no longer is the
	# one that revision 2 stored
	G update-ref refs/opt/collections/c "$clean"
	tamper c 4 rehash_entry 1 '.time += 1'
	broken c 'log entry rev 2: bad signature*'
	# the same in every revision's copy: the entry after it no longer
	# follows it
	G update-ref refs/opt/collections/c "$clean"
	for r in 2 3 4; do tamper c "$r" rehash_entry 1 '.time += 1'; done
	broken c 'log entry rev 2: bad signature*'
}

@test "tampering: an entry rewritten in an old revision only" {
	seed
	# revision 2's own copy of its entry, with other actions: the head's
	# log is intact
	tamper c 2 edit_log_tail '.entries[1].actions = []'
	run opt-log show c
	assert_success
	broken c 'log entry rev 2: the log stored at revision 2 holds other actions for it'
}

@test "tampering: commit trailers and history" {
	seed
	local clean
	clean=$(G rev-parse refs/opt/collections/c)
	MSG_SED="s/^Opt-Trx: .*/Opt-Trx: $D/" tamper c 3
	broken c "log entry rev 3: transaction '*', but the commit of revision 3 names '$D'"
	G update-ref refs/opt/collections/c "$clean"
	drop_rev c 2
	broken c 'revision 3 follows revision 1'
	G update-ref refs/opt/collections/c "$clean"
	# history cut off: revision 2 without its parent
	NO_PARENT=1 tamper c 2
	broken c 'revision 2: its commit has no parent (the revisions before it are missing)'
	G update-ref refs/opt/collections/c "$clean"
	run opt-log verify c
	assert_success
}

@test "tampering: a tree leaf rewritten" {
	command -v opt-tree >/dev/null || skip "opt-tree is not built"
	for i in $(seq 1 20); do echo "{\"key\":$i,\"value\":$i}"; done | opt-tree put t --capacity 4 >/dev/null
	local leaf
	leaf=$(opt-block ls -c t --type TL | jq -r .id | head -n 1)
	tamper t 1 edit_block "$leaf" '.entries |= reverse'
	broken t "log entry rev 1: block '$leaf' does not match the hash the log recorded for it"
}

@test "verify with no names: the broken collection is named, the others are ok, exit 4" {
	seed
	echo '{"x":1}' | opt-block put -c a >/dev/null
	echo '{"x":1}' | opt-block put -c z >/dev/null
	tamper c 4 edit_log_tail '.entries[0].trx = "aaaa"'
	run --separate-stderr opt-log verify
	assert_failure 4
	assert_equal "${lines[0]}" '{"collection":"a","entries":1,"rev":1,"ok":true}'
	[[ ${lines[1]} == '{"collection":"c","entries":0,"rev":4,"ok":false,"error":"log entry rev 1: hash mismatch","reason":"tampered"}' ]]
	assert_equal "${lines[2]}" '{"collection":"z","entries":1,"rev":1,"ok":true}'
	assert_equal "$stderr" "opt-log: collection 'c': log entry rev 1: hash mismatch"
	# show still shows what is there
	run opt-log show c
	assert_success
	assert_equal "${#lines[@]}" 4
}

@test "signatures: entries by a key the store does not trust fail verify until it is trusted" {
	seed
	old=$(opt-log identity | jq -r .key)
	mv "$OPT_STORE/opt-identity" "$TMP/old-identity"
	# a new identity signs the next entry; the old key is no longer trusted
	echo '{"header":{"type":"t"}}' | opt-block put -c c >/dev/null
	new=$(opt-log identity | jq -r .key)
	[ "$old" != "$new" ]
	# an open store (the default) accepts any key whose signature checks
	run opt-log verify c
	assert_success
	run opt-log restrict
	assert_output '{"restricted":true}'
	run --separate-stderr opt-log verify c
	assert_failure 4
	[[ "$stderr" == *"log entry rev 1: signed by key $old, which this store does not trust"* ]]
	run opt-log trust "$old" --name "the old me"
	assert_success
	run opt-log verify c
	assert_success
	run opt-log trusted
	assert_line --partial "\"key\":\"$old\",\"name\":\"the old me\""
	run opt-log untrust "$new"
	assert_failure 2
	run opt-log untrust "$old"
	assert_success
	run opt-log verify c
	assert_failure 4
}

@test "signatures: a forged signature or a removed one fails verify" {
	seed
	clean=$(G rev-parse refs/opt/collections/c)
	tamper c 4 edit_log_tail '.entries[1].sig = ("0" * 128)'
	broken c 'log entry rev 2: bad signature*'
	G update-ref refs/opt/collections/c "$clean"
	tamper c 4 edit_log_tail '.entries[1] |= del(.sig)'
	broken c 'log entry rev 2: the entry is not signed'
}
