#!/usr/bin/env bats
# Collection names: the one rule every command checks before it writes
# anything (what git's ref names allow, and less), and names that cannot
# live beside each other in one store ('x' and 'x/y': a git ref and a
# directory of the same name) refused up front, in both directions.

load test_helper

A=aaaaaaaaaaaaaaaaaaaaaaaaaa

# The refs of the store (what a refused command must leave alone).
refs() { git --git-dir="$OPT_STORE" for-each-ref --format='%(refname) %(objectname)'; }

# ---- the name rule ----

@test "names git refuses as refs, and the ones our rule adds, are refused with exit 2 by every writer and reader" {
	local before name long
	long=$(printf 'n%.0s' {1..201})
	before=$(refs)
	for name in 'a.' 'a./b' 'a..b' 'x~1' 'x^' 'x:y' 'x?' 'x*' 'x[' 'x\y' 'x y' $'x\ty' $'x\x01' 'x@{1}' \
		'x.lock' 'x.lock/y' '.x' 'x/.y' '-x' 'x/-y' 'x/' '/x' 'a//b' '' "$long" 'é'; do
		run --separate-stderr opt-block put -c "$name" <<<"{\"header\":{\"id\":\"$A\"}}"
		[ "$status" -eq 2 ] || fail "opt-block put -c '$name': exit $status: $stderr"
		[[ $stderr == "opt-block: invalid collection name"* ]] || fail "opt-block put -c '$name': $stderr"
		run --separate-stderr opt-tree put -- "$name" k 1
		[ "$status" -eq 2 ] || fail "opt-tree put '$name': exit $status: $stderr"
		[[ $stderr == "opt-tree: invalid collection name"* ]] || fail "opt-tree put '$name': $stderr"
		run --separate-stderr opt-diary append -- "$name" 1
		[ "$status" -eq 2 ] || fail "opt-diary append '$name': exit $status: $stderr"
		run --separate-stderr opt-log commit <<<"$(jq -cn --arg n "$name" '{collections: {($n): [{type: "put", key: "k", value: 1}]}}')"
		[ "$status" -eq 2 ] || fail "opt-log commit '$name': exit $status: $stderr"
		[[ $stderr == *"invalid collection name"* ]] || fail "opt-log commit '$name': $stderr"
		# readers say so too (not "no such collection", not exit 7)
		run --separate-stderr opt-tree get -- "$name" k
		[ "$status" -eq 2 ] || fail "opt-tree get '$name': exit $status: $stderr"
		run --separate-stderr opt-block ls -c "$name"
		[ "$status" -eq 2 ] || fail "opt-block ls -c '$name': exit $status: $stderr"
	done
	[ "$(refs)" = "$before" ]
	fsck_ok
}

# The first line of what the last command printed on stderr.
first_err() { printf '%s\n' "$stderr" | head -n 1; }

@test "the message says what is wrong with the name, control characters escaped" {
	run --separate-stderr opt-tree put 'a.' k 1
	assert_failure 2
	assert_equal "$(first_err)" "opt-tree: invalid collection name 'a.': a component ends with '.'"
	run --separate-stderr opt-tree put 'a/b.lock' k 1
	assert_failure 2
	assert_equal "$(first_err)" "opt-tree: invalid collection name 'a/b.lock': a component ends with '.lock'"
	run --separate-stderr opt-tree put 'x~1' k 1
	assert_failure 2
	assert_equal "$(first_err)" "opt-tree: invalid collection name 'x~1': '~' is not allowed (use letters, digits, '.', '_', '-' and '/')"
	run --separate-stderr opt-tree put $'x\x1b[31m' k 1
	assert_failure 2
	assert_equal "$(first_err)" "opt-tree: invalid collection name 'x\\x1b[31m': '\\x1b' is not allowed (use letters, digits, '.', '_', '-' and '/')"
	run --separate-stderr opt-tree put 'a//b' k 1
	assert_failure 2
	assert_equal "$(first_err)" "opt-tree: invalid collection name 'a//b': an empty component"
	run --separate-stderr opt-tree put 'a..b' k 1
	assert_failure 2
	assert_equal "$(first_err)" "opt-tree: invalid collection name 'a..b': '..' is not allowed"
	run --separate-stderr opt-block put -c 'x/-y' <<<"{\"header\":{\"id\":\"$A\"}}"
	assert_failure 2
	assert_equal "$(first_err)" "opt-block: invalid collection name 'x/-y': a component begins with '-'"
	# a name inside a transaction document: the same words
	run --separate-stderr opt-log commit <<<'{"collections": {"a.": [{"type": "put", "key": "k", "value": 1}]}}'
	assert_failure 2
	assert_equal "$stderr" "opt-log: line 1: invalid collection name 'a.': a component ends with '.' (nothing committed)"
}

@test "names within the rule work: dots, dashes and underscores inside components, '/' between them" {
	local name
	for name in a.b a-b a_b A1 a/b.c/d-e_f x.y.z 9 'a.lock.b' "$(printf 'n%.0s' {1..200})"; do
		run opt-tree put "$name" k 1
		assert_success
		run opt-tree get "$name" k
		assert_output '{"key":"k","value":1}'
	done
	run opt-log verify
	assert_success
	fsck_ok
}
