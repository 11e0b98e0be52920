#!/usr/bin/env bats
# opt-block: bad input never corrupts the store; each error is one clear
# line on stderr and the documented exit status.

load test_helper

seed() {
	echo '{"header":{"id":"aaaaaaaaaaaaaaaaaaaaaaaaaa","type":"t"},"list":[1,2]}' | opt-block put -c c >/dev/null
}

# the store still holds exactly revision 1 with the seeded block
unchanged() {
	run opt-block get -c c aaaaaaaaaaaaaaaaaaaaaaaaaa
	assert_success
	assert_output --partial '"list":[1,2]'
	run git --git-dir="$OPT_STORE" rev-list --count refs/opt/collections/c
	assert_output 1
	fsck_ok
}

@test "malformed JSON is refused and nothing is written" {
	seed
	run --separate-stderr opt-block put -c c <<<'{"header":{"id":"bbbbbbbbbbbbbbbbbbbbbbbbbb","type":"t"}} {"oops"'
	assert_failure 2
	[[ "$stderr" == "opt-block: line 1: invalid JSON"* ]]
	[[ "$stderr" == *"nothing written"* ]]
	run -1 opt-block get -c c bbbbbbbbbbbbbbbbbbbbbbbbbb
	unchanged
}

@test "a non-array operation, an index out of range, a bad op shape" {
	seed
	run --separate-stderr opt-block apply -c c aaaaaaaaaaaaaaaaaaaaaaaaaa <<<'{"op":1}'
	assert_failure 2
	[[ "$stderr" == "opt-block: line 1: expected an operation"* ]]
	run --separate-stderr opt-block apply -c c aaaaaaaaaaaaaaaaaaaaaaaaaa <<<'["list",5,0,[3]]'
	assert_failure 2
	[[ "$stderr" == *"index 5 out of range for 'list' (length 2)"* ]]
	run --separate-stderr opt-block apply -c c aaaaaaaaaaaaaaaaaaaaaaaaaa <<<'["list",0,7,[]]'
	assert_failure 2
	run --separate-stderr opt-block apply -c c aaaaaaaaaaaaaaaaaaaaaaaaaa <<<'["list","x",0,[]]'
	assert_failure 2
	[[ "$stderr" == *"index must be an integer"* ]]
	run --separate-stderr opt-block apply -c c aaaaaaaaaaaaaaaaaaaaaaaaaa <<<'["header",0,0,{}]'
	assert_failure 2
	# two ops, the second bad: neither applies
	run opt-block apply -c c aaaaaaaaaaaaaaaaaaaaaaaaaa <<<'[["list",0,0,[0]],["list",9,0,[1]]]'
	assert_failure 2
	unchanged
}

@test "an unknown block ID is not found (exit 1) and removes nothing" {
	seed
	run --separate-stderr opt-block get -c c zzzzzzzzzzzzzzzzzzzzzzzzzz
	assert_failure 1
	assert_equal "$stderr" "opt-block: no block 'zzzzzzzzzzzzzzzzzzzzzzzzzz' in collection c"
	run --separate-stderr opt-block apply -c c zzzzzzzzzzzzzzzzzzzzzzzzzz <<<'["x",0,0,1]'
	assert_failure 1
	run --separate-stderr opt-block rm -c c aaaaaaaaaaaaaaaaaaaaaaaaaa zzzzzzzzzzzzzzzzzzzzzzzzzz
	assert_failure 1
	[[ "$stderr" == *"nothing removed"* ]]
	# get of several IDs prints the ones found and exits 1
	run opt-block get -c c aaaaaaaaaaaaaaaaaaaaaaaaaa zzzzzzzzzzzzzzzzzzzzzzzzzz
	assert_failure 1
	assert_output --partial '"list":[1,2]'
	run -1 opt-block get -c nosuch aaaaaaaaaaaaaaaaaaaaaaaaaa
	unchanged
}

@test "IDs with '/' or '..' and bad collection names are refused" {
	seed
	run --separate-stderr opt-block get -c c '../../etc/passwd'
	assert_failure 2
	[[ "$stderr" == "opt-block: invalid block ID '../../etc/passwd'"* ]]
	run opt-block put -c c <<<'{"header":{"id":"a/b","type":"t"}}'
	assert_failure 2
	run opt-block put -c c <<<'{"header":{"id":"..","type":"t"}}'
	assert_failure 2
	run opt-block rm -c c 'x/../y'
	assert_failure 2
	run --separate-stderr opt-block put -c '../evil' <<<'{}'
	assert_failure 2
	[[ "$stderr" == *"invalid collection name"* ]]
	run opt-block put -c 'a..b' <<<'{}'
	assert_failure 2
	run opt-block put -c 'x.lock' <<<'{}'
	assert_failure 2
	run opt-block put -c '' <<<'{}'
	assert_failure 2
	unchanged
}

@test "a block whose header disagrees with -c is refused" {
	seed
	run --separate-stderr opt-block put -c c <<<'{"header":{"id":"bbbbbbbbbbbbbbbbbbbbbbbbbb","type":"t","collection":"other"}}'
	assert_failure 2
	[[ "$stderr" == *"belongs to collection 'other', not 'c'"* ]]
	run opt-block put -c c <<<'{"header":"nope"}'
	assert_failure 2
	run opt-block put -c c <<<'[1,2]'
	assert_failure 2
	run opt-block put -c c <<<'{"header":{"type":"LGD"}}'
	assert_failure 2
	unchanged
}

@test "the collection's header and log blocks are the collection's own" {
	seed
	hid=$(opt-block ls -c c --type COL | sed 's/.*"id":"\([a-z2-7]*\)".*/\1/')
	lid=$(opt-block ls -c c --type LGD | sed 's/.*"id":"\([a-z2-7]*\)".*/\1/')
	run opt-block rm -c c "$hid"
	assert_failure 2
	run opt-block rm -c c "$lid"
	assert_failure 2
	run opt-block apply -c c "$lid" <<<'["entries",0,1,[]]'
	assert_failure 2
	run opt-block put -c c <<<"{\"header\":{\"id\":\"$hid\",\"type\":\"t\"}}"
	assert_failure 2
	unchanged
}

@test "usage errors exit 2 with one line that says where the usage is" {
	run --separate-stderr opt-block put <<<'{}'
	assert_failure 2
	[[ "$stderr" == *"the collection is required"* ]]
	assert_equal "$stderr" "opt-block: the collection is required (-c COLL); try 'opt-block put --help'"
	run --separate-stderr opt-block frobnicate
	assert_failure 2
	[[ "$stderr" == "opt-block: unknown command 'frobnicate'"* ]]
	run opt-block get -c c --rev x aaaaaaaaaaaaaaaaaaaaaaaaaa
	assert_failure 2
	run opt-block get -c c --rev 0 aaaaaaaaaaaaaaaaaaaaaaaaaa
	assert_failure 2
	run opt-block ls --rev 2
	assert_failure 2
	run opt-block get --bogus
	assert_failure 2
	run opt-block
	assert_failure 2
}

@test "a directory that is not a store is refused (exit 7) and left alone" {
	mkdir "$TMP/plain" && echo hi > "$TMP/plain/file"
	run --separate-stderr opt-block ls --store "$TMP/plain"
	assert_failure 7
	[[ "$stderr" == *"is not an optimystic store"* ]]
	run --separate-stderr opt-block put -c x --store "$TMP/plain" <<<'{}'
	assert_failure 7
	run opt-block init "$TMP/plain"
	assert_failure 7
	[ "$(ls "$TMP/plain")" = file ]
	# a git repository of our own format but not ours
	git init -q --bare "$TMP/gitrepo"
	run --separate-stderr opt-block ls --store "$TMP/gitrepo"
	assert_failure 7
	[[ "$stderr" == *"not an optimystic store"* ]]
	run opt-block ls --store "$TMP/nothing/here"
	assert_failure 7
}

@test "a SHA-256 git repository is refused, never written" {
	git init -q --bare --object-format=sha256 "$TMP/sha256" 2>/dev/null || skip "git without sha256 support"
	git --git-dir="$TMP/sha256" config optimystic.version 1
	run --separate-stderr opt-block put -c x --store "$TMP/sha256" <<<'{}'
	assert_failure 7
	[[ "$stderr" == *"object format sha256"* ]]
	[ -z "$(find "$TMP/sha256/objects" -type f)" ]
}

@test "an unreadable or read-only store fails cleanly (exit 7)" {
	seed
	if [ "$(id -u)" = 0 ]; then
		command -v setpriv >/dev/null || skip "needs setpriv to drop root"
		chmod -R a+rX "$TMP"
		chmod -R a-w "$OPT_STORE"
		run --separate-stderr setpriv --reuid=nobody --regid=nogroup --clear-groups \
			env PATH="$PATH" OPT_STORE="$OPT_STORE" opt-block put -c c <<<'{"x":1}'
		assert_failure 7
		[[ "$stderr" == "opt-block: "* ]]
		chmod -R u+w "$OPT_STORE"
		chmod 000 "$OPT_STORE"
		run --separate-stderr setpriv --reuid=nobody --regid=nogroup --clear-groups \
			env PATH="$PATH" OPT_STORE="$OPT_STORE" opt-block ls
		assert_failure 7
		chmod 755 "$OPT_STORE"
	else
		chmod -R a-w "$OPT_STORE"
		run opt-block put -c c <<<'{"x":1}'
		assert_failure 7
		chmod -R u+w "$OPT_STORE"
	fi
	unchanged
}

@test "a closed stdout is an error, not a success" {
	seed
	run bash -c 'opt-block get -c c aaaaaaaaaaaaaaaaaaaaaaaaaa >/dev/full'
	assert_failure 7
	assert_output --partial "cannot write output"
}
