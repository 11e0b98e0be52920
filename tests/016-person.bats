#!/usr/bin/env bats
# What a new user meets: a store named explicitly must exist, block ID
# rules in messages, listing only user blocks, human forms of the log,
# quiet runs, help text, versions, and plain git on a store.

load test_helper

# ---- a store named explicitly must exist ----

@test "a store named with --store, -C or OPT_STORE that does not exist is an error, and nothing is created" {
	run -7 --separate-stderr opt-tree -C "$TMP/typo/x" put users alice 1
	assert_equal "$stderr" "opt-tree: no store at '$TMP/typo/x' (opt-block init $TMP/typo/x creates one)"
	assert_equal "$output" ""
	[ ! -e "$TMP/typo" ]
	run -7 --separate-stderr opt-block --store "$TMP/typo/x" put -c c <<<'{"v":1}'
	assert_equal "$stderr" "opt-block: no store at '$TMP/typo/x' (opt-block init $TMP/typo/x creates one)"
	[ ! -e "$TMP/typo" ]
	OPT_STORE="$TMP/nonexistent/x" run -7 --separate-stderr opt-diary append events 1
	assert_equal "$stderr" "opt-diary: no store at '$TMP/nonexistent/x' (opt-block init $TMP/nonexistent/x creates one)"
	[ ! -e "$TMP/nonexistent" ]
	OPT_STORE="$TMP/nonexistent/x" run -7 --separate-stderr opt-log commit <<<'{"collections":{"t":[{"type":"put","key":"k","value":1}]}}'
	[ ! -e "$TMP/nonexistent" ]
	# readers say the same
	run -7 --separate-stderr opt-tree -C "$TMP/typo/x" get users alice
	assert_equal "$stderr" "opt-tree: no store at '$TMP/typo/x' (opt-block init $TMP/typo/x creates one)"
	# an empty directory named explicitly is not a store either
	mkdir "$TMP/empty"
	run -7 --separate-stderr opt-tree -C "$TMP/empty" put users alice 1
	assert_equal "$stderr" "opt-tree: '$TMP/empty' is not an optimystic store"
	run ls -A "$TMP/empty"
	assert_output ""
}

@test "opt-block init and opt-sync clone create the store they are given; ./.opt is created on first write" {
	run opt-block init "$TMP/a/b/s"
	assert_success
	run opt-block -C "$TMP/c/s" init
	assert_success
	run opt-tree -C "$TMP/c/s" put users alice 1
	assert_success
	run opt-sync clone "$TMP/c/s" "$TMP/d/s"
	assert_success
	run opt-tree -C "$TMP/d/s" get users alice
	assert_output '{"key":"alice","value":1}'
	# no store named: ./.opt is made on the first write, and said so
	unset OPT_STORE
	mkdir "$TMP/w" && cd "$TMP/w"
	run --separate-stderr opt-tree put users alice 1
	assert_success
	assert_equal "$stderr" "opt-tree: created store '.opt'"
	[ -d "$TMP/w/.opt" ]
}

# ---- block IDs ----

@test "an invalid block ID is refused with the rule: base32, a-z and 2-7, 2 to 64 characters" {
	rule='block IDs are base32: a-z and 2-7, 2 to 64 characters'
	echo '{"header":{"id":"alice","type":"user"}}' | opt-block put -c users >/dev/null
	run -2 --separate-stderr opt-block get -c users user1
	assert_equal "$stderr" "opt-block: invalid block ID 'user1' ($rule)"
	run -2 --separate-stderr opt-block history -c users user1
	assert_equal "$stderr" "opt-block: invalid block ID 'user1' ($rule)"
	run -2 --separate-stderr opt-block rm -c users Alice
	assert_equal "$stderr" "opt-block: invalid block ID 'Alice' ($rule)"
	run -2 --separate-stderr opt-block apply -c users x <<<'["v",0,0,1]'
	assert_equal "$stderr" "opt-block: invalid block ID 'x' ($rule)"
	run -2 --separate-stderr opt-block put -c users <<<'{"header":{"id":"user1","type":"user"}}'
	assert_equal "$stderr" "opt-block: line 1: invalid block ID 'user1' ($rule) (nothing written)"
	# the README's and opt-block(1)'s first pages say it
	grep -q 'a-z.*2-7' "$TOP/README.md"
	grep -q 'user1' "$TOP/README.md"
	grep -q 'user1' "$TOP/man/opt-block.1"
}
