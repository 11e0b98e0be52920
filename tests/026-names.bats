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
# (without the hint of a usage error, "; try 'PROG VERB --help'")
first_err() { printf '%s\n' "$stderr" | head -n 1 | sed "s/; try '[^']*--help'\$//"; }

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

# ---- names that clash ----

@test "a collection cannot be created where its name is a prefix of another's, or another's is a prefix of its own" {
	local before
	opt-tree put p/q k 1 >/dev/null
	before=$(refs)
	run --separate-stderr opt-block put -c p/q/r <<<"{\"header\":{\"id\":\"$A\"}}"
	assert_failure 2
	assert_equal "$stderr" "opt-block: collection 'p/q/r' cannot be created: collection 'p/q' exists"
	run --separate-stderr opt-block transform -c p/q/r <<<"{\"inserts\":{\"$A\":{\"header\":{\"id\":\"$A\",\"type\":\"t\"}}}}"
	assert_failure 2
	[[ $stderr == *"collection 'p/q/r' cannot be created: collection 'p/q' exists"* ]] || fail "$stderr"
	run --separate-stderr opt-tree put p k 1
	assert_failure 2
	assert_equal "$stderr" "opt-tree: collection 'p' cannot be created: collection 'p/q' exists"
	run --separate-stderr opt-diary append p/q/r/s 1
	assert_failure 2
	assert_equal "$stderr" "opt-diary: collection 'p/q/r/s' cannot be created: collection 'p/q' exists"
	run --separate-stderr opt-tree put p/q/r <<<'{"key":"k","value":1}'
	assert_failure 2
	[ "$(refs)" = "$before" ]
	# the existing one and unrelated ones are fine
	run opt-tree put p/q k 2
	assert_success
	run opt-tree put p/qr k 1
	assert_success
	run opt-tree put p-q/r k 1
	assert_success
	fsck_ok
}

@test "opt-log commit: a clash with an existing collection is refused before anything is written" {
	local before
	opt-tree put p/q k 1 >/dev/null
	opt-tree put aa k 1 >/dev/null
	before=$(refs)
	run --separate-stderr opt-log commit <<<'{"collections": {"aa": [{"type": "put", "key": "k", "value": 2}], "p/q/r": [{"type": "put", "key": "k", "value": 1}]}}'
	assert_failure 2
	[ -z "$output" ]
	assert_equal "$stderr" "opt-log: collection 'p/q/r' cannot be created: collection 'p/q' exists"
	# no pending revision was left on aa: its next writer goes through at once
	[ "$(refs)" = "$before" ]
	run env OPT_BUSY_TIMEOUT=2000 opt-tree put aa k 3
	assert_success
	run opt-tree get aa k
	assert_output '{"key":"k","value":3}'
	# and the other way round: 'p' while 'p/q' exists
	run --separate-stderr opt-log commit <<<'{"collections": {"aa": [{"type": "put", "key": "k", "value": 4}], "p": [{"type": "append", "entry": 1}]}}'
	assert_failure 2
	[[ $stderr == *"collection 'p' cannot be created: collection 'p/q' exists"* ]] || fail "$stderr"
	run opt-tree get aa k
	assert_output '{"key":"k","value":3}'
	run opt-log verify
	assert_success
	fsck_ok
}

@test "opt-log commit: two new collections of one transaction that clash are refused" {
	local before
	before=$(refs)
	run --separate-stderr opt-log commit <<<'{"collections": {"x": [{"type": "put", "key": "k", "value": 1}], "x-y": [{"type": "put", "key": "k", "value": 1}], "x/y": [{"type": "put", "key": "k", "value": 1}]}}'
	assert_failure 2
	[[ $stderr == *"collections 'x' and 'x/y' cannot both exist"* ]] || fail "$stderr"
	[ "$(refs)" = "$before" ]
	# --each: the documents before it stay committed, the one that clashes is refused
	run --separate-stderr opt-log commit --each <<<'{"collections": {"m": [{"type": "put", "key": "k", "value": 1}]}}
{"collections": {"n": [{"type": "put", "key": "k", "value": 1}], "m/n": [{"type": "put", "key": "k", "value": 1}]}}'
	assert_failure 2
	assert_equal "$stderr" "opt-log: collection 'm/n' cannot be created: collection 'm' exists"
	[ "$(jq -c .collections <<<"$output")" = '{"m":1}' ]
	run opt-tree get m k
	assert_success
	run opt-tree get n k
	assert_failure 1
}

@test "a transaction left pending on 'aa' whose primary can no longer be created is aborted by the next writer" {
	local trx
	# killed after its pend on aa, before its decision on p/q/r
	run env OPT_TXN_TTL=100 OPT_TEST_CRASH=txn:pended opt-log commit <<<'{"collections": {"aa": [{"type": "put", "key": "k", "value": 1}], "p/q/r": [{"type": "put", "key": "k", "value": 1}]}}'
	[ "$status" -eq 137 ]
	trx=$(git --git-dir="$OPT_STORE" cat-file commit refs/opt/collections/aa | sed -n 's/^Opt-Trx: //p')
	# meanwhile p/q came: p/q/r, the primary, can never be created now
	opt-tree put p/q k 1 >/dev/null
	sleep 0.2
	run opt-log status "$trx"
	assert_success
	assert_equal "$(jq -r .status <<<"$output")" aborted
	# readers do not see it; the next writer of aa reverts it and goes on
	run opt-tree get aa k
	assert_failure 1
	run --separate-stderr env OPT_BUSY_TIMEOUT=3000 opt-tree put aa k 2
	assert_success
	run opt-tree get aa k
	assert_output '{"key":"k","value":2}'
	assert_equal "$(opt-log show aa | jq -c '[.rev, .status, .revert]' | tr '\n' ' ')" \
		'[1,"pending",null] [2,"aborted",1] [3,null,null] '
	run opt-tree put aa k 3
	assert_success
	run opt-log verify
	assert_success
	fsck_ok
}
