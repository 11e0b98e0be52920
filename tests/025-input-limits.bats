#!/usr/bin/env bats
# Input that must be refused before it reaches the store: block-level
# writes into tree and diary collections, values nested deeper than a
# stored document may be, numbers that underflow, keys over the size
# limit, an empty store path, records with unknown members; and messages
# that stay readable: no repeated text, no raw control bytes.

load test_helper

# rev_of NAME: the collection's revision (its ref's commit count)
rev_of() { git --git-dir="$OPT_STORE" rev-list --count "refs/opt/collections/$1"; }

# ---- block-level writes keep to block collections ----

@test "opt-block apply, rm and transform refuse tree and diary collections as put does" {
	opt-tree put t a 1 >/dev/null
	opt-tree put t b 2 >/dev/null
	opt-diary append d '"x"' >/dev/null
	leaf=$(opt-block ls -c t --type TL | jq -r .id)
	dblk=$(opt-block ls -c d --type DID | jq -r .id)
	[ -n "$leaf" ] && [ -n "$dblk" ]
	# what put says
	run --separate-stderr opt-block put -c t <<<'{"v":1}'
	assert_failure 2
	assert_equal "$stderr" "opt-block: collection 't' is a tree collection, not a block collection"
	run --separate-stderr opt-block apply -c t "$leaf" <<<'["entries",0,1,[]]'
	assert_failure 2
	assert_equal "$stderr" "opt-block: collection 't' is a tree collection, not a block collection"
	run --separate-stderr opt-block rm -c t "$leaf"
	assert_failure 2
	assert_equal "$stderr" "opt-block: collection 't' is a tree collection, not a block collection"
	run --separate-stderr opt-block transform -c t <<<"{\"updates\":{\"$leaf\":[[\"entries\",0,0,[[\"0\",0]]]]}}"
	assert_failure 2
	assert_equal "$stderr" "opt-block: collection 't' is a tree collection, not a block collection"
	run --separate-stderr opt-block apply -c d "$dblk" <<<'["entries",0,1,[]]'
	assert_failure 2
	assert_equal "$stderr" "opt-block: collection 'd' is a diary collection, not a block collection"
	run --separate-stderr opt-block rm -c d "$dblk"
	assert_failure 2
	run --separate-stderr opt-block transform -c d <<<'{"deletes":["'"$dblk"'"]}'
	assert_failure 2
	assert_equal "$stderr" "opt-block: collection 'd' is a diary collection, not a block collection"
	# nothing moved: the tree and the diary read and verify as before
	assert_equal "$(rev_of t)" 2
	assert_equal "$(rev_of d)" 1
	run opt-tree range t
	assert_success
	assert_output '{"key":"a","value":1}
{"key":"b","value":2}'
	run opt-tree put t c 3
	assert_success
	run opt-diary read d
	assert_output '"x"'
	run opt-log verify t d
	assert_success
	# a block collection still takes all three
	echo '{"header":{"id":"aaaaaaaaaaaaaaaaaaaaaaaaaa","type":"t"},"v":[1]}' | opt-block put -c c >/dev/null
	run opt-block apply -c c aaaaaaaaaaaaaaaaaaaaaaaaaa <<<'["v",0,0,[0]]'
	assert_success
	run opt-block transform -c c <<<'{"inserts":{"bbbbbbbbbbbbbbbbbbbbbbbbbb":{"header":{"id":"bbbbbbbbbbbbbbbbbbbbbbbbbb","type":"t"}}}}'
	assert_success
	run opt-block rm -c c bbbbbbbbbbbbbbbbbbbbbbbbbb
	assert_success
	# and transform still creates a block collection
	run opt-block transform -c new <<<'{"inserts":{"cccccccccccccccccccccccccc":{"header":{"id":"cccccccccccccccccccccccccc","type":"t"}}}}'
	assert_success
	run opt-block stat -c new
	assert_output --partial '"type":"block"'
}

# ---- messages ----

@test "a collection that stays locked: one message naming the lock, not repeating itself" {
	opt-tree put t a 1 >/dev/null
	: >"$OPT_STORE/refs/opt/collections/t.lock"
	export OPT_BUSY_TIMEOUT=300 OPT_STALE_LOCK_MS=600000
	run --separate-stderr opt-tree put t b 2
	assert_failure 6
	[[ $stderr =~ ^"opt-tree: collection 't' is busy (its ref is locked: refs/opt/collections/t.lock); gave up after "[0-9]+" attempts"$ ]] ||
		fail "stderr: $stderr"
	# a stream (group commit) and a multi-collection transaction say the same
	run --separate-stderr opt-tree put t --each <<<'{"key":"b","value":2}'
	assert_failure 6
	[[ $stderr =~ ^"opt-tree: collection 't' is busy (its ref is locked: refs/opt/collections/t.lock); gave up after "[0-9]+" attempts"$ ]] ||
		fail "stderr: $stderr"
	run --separate-stderr opt-log commit <<<'{"collections":{"t":[{"type":"put","key":"b","value":2}]}}'
	assert_failure 6
	[[ $stderr == "opt-log: collection 't' is busy (its ref is locked: refs/opt/collections/t.lock); gave up after "* ]] ||
		fail "stderr: $stderr"
	rm "$OPT_STORE/refs/opt/collections/t.lock"
	run opt-tree range t
	assert_output '{"key":"a","value":1}'
}

@test "--conflict exec: a resolver that prints no JSON: the parser's reason, once" {
	export OPT_FSYNC=0
	opt-block init "$TMP/a" >/dev/null
	opt-diary -C "$TMP/a" append events '"0"' >/dev/null
	opt-sync clone "$TMP/a" "$TMP/b" >/dev/null
	opt-log -C "$TMP/a" trust "$(opt-log -C "$TMP/b" identity | jq -r .key)" --name b >/dev/null
	opt-log -C "$TMP/b" trust "$(opt-log -C "$TMP/a" identity | jq -r .key)" --name a >/dev/null
	opt-diary -C "$TMP/a" append events '"A"' >/dev/null
	opt-diary -C "$TMP/b" append events '"B"' >/dev/null
	run --separate-stderr opt-sync -C "$TMP/b" pull --conflict 'exec:echo oops'
	assert_failure 3
	[[ $stderr == *"the resolver 'echo oops' printed no JSON action or null (invalid JSON: "*"near 'oops')" ]] ||
		fail "stderr: $stderr"
	[ "$(grep -o 'resolver' <<<"$stderr" | wc -l)" -eq 1 ] || fail "stderr: $stderr"
}

# no_raw_controls: $stderr holds no control byte but the line ends
no_raw_controls() {
	! LC_ALL=C grep -q '[[:cntrl:]]' <<<"$stderr" || fail "raw control bytes in: $(od -c <<<"$stderr")"
}

@test "IDs, names and operands quoted in messages are escaped: no raw control bytes reach the terminal" {
	esc=$'\e'
	echo '{}' | opt-block put -c c >/dev/null
	run --separate-stderr opt-block get -c c "ab${esc}[31mcd"
	assert_failure 2
	assert_equal "$stderr" 'opt-block: invalid block ID '\''ab\x1b[31mcd'\'' (block IDs are base32: a-z and 2-7, 2 to 64 characters)'
	run --separate-stderr opt-block rm -c c "ab${esc}]0;pwned"$'\a'
	assert_failure 2
	assert_equal "$stderr" 'opt-block: invalid block ID '\''ab\x1b]0;pwned\x07'\'' (block IDs are base32: a-z and 2-7, 2 to 64 characters)'
	run --separate-stderr opt-tree put "t${esc}[2J" k 1
	assert_failure 2
	[[ $stderr == "opt-tree: invalid collection name 't\x1b[2J'"* ]] || fail "stderr: $stderr"
	no_raw_controls
	run --separate-stderr opt-block put -c "c${esc}[2J" <<<'{}'
	assert_failure 2
	[[ $stderr == "opt-block: invalid collection name 'c\x1b[2J'"* ]] || fail "stderr: $stderr"
	no_raw_controls
	run --separate-stderr opt-diary read "d${esc}[2J"
	assert_failure 2
	no_raw_controls
	# the library's messages too (a transaction document names it)
	run --separate-stderr opt-log commit <<<'{"collections":{"t\u001b[2J":[{"type":"put","key":"k","value":1}]}}'
	assert_failure 2
	assert_equal "$stderr" 'opt-log: line 1: invalid collection name '\''t\x1b[2J'\'': '\''\x1b'\'' is not allowed (use letters, digits, '\''.'\'', '\''_'\'', '\''-'\'' and '\''/'\'') (nothing committed)'
	run --separate-stderr opt-sync remote add "o${esc}[2J" /nowhere
	assert_failure 2
	[[ $stderr == "opt-sync: invalid remote name 'o\x1b[2J'"* ]] || fail "stderr: $stderr"
	no_raw_controls
	run --separate-stderr opt-sync push "o${esc}[2J"
	assert_failure 2
	no_raw_controls
	run --separate-stderr opt-log status "x${esc}[2J"
	assert_failure 2
	no_raw_controls
	# operands echoed back: a command, an option, a JSON value, a number
	run --separate-stderr opt-tree "put${esc}[2J"
	assert_failure 2
	no_raw_controls
	[[ $stderr == *"unknown command 'put\x1b[2J'"* ]] || fail "stderr: $stderr"
	run --separate-stderr opt-tree put t k "${esc}[2J"
	assert_failure 2
	no_raw_controls
	run --separate-stderr opt-tree range t --limit "${esc}[2J"
	assert_failure 2
	no_raw_controls
	run --separate-stderr opt-tree get t "--x${esc}[2J"
	assert_failure 2
	no_raw_controls
	# a backslash is doubled, UTF-8 stays as it is, a C1 control is escaped
	run --separate-stderr opt-block get -c c $'\\x1b\xc3\xa9\xc2\x9b'
	assert_failure 2
	assert_equal "$stderr" 'opt-block: invalid block ID '\''\\x1bé\xc2\x9b'\'' (block IDs are base32: a-z and 2-7, 2 to 64 characters)'
	# a key is quoted as JSON: its control characters are escapes already
	opt-tree put t a 1 >/dev/null
	run --separate-stderr opt-tree get t "a${esc}[2J"
	assert_failure 1
	assert_equal "$stderr" 'opt-tree: no key "a\u001b[2J" in tree '\''t'\'''
}

# ---- the store path ----

@test "an empty store path is a usage error, never the nearest store" {
	mkdir "$TMP/w"
	cd "$TMP/w"
	opt-block init .opt >/dev/null
	unset OPT_STORE
	for args in "-C ''" "--store ''" "--store="; do
		eval "run --separate-stderr opt-tree $args put t a 1"
		assert_failure 2
		[[ $stderr == "opt-tree: option --store needs a directory, not an empty string"* ]] || fail "$args: $stderr"
	done
	run --separate-stderr opt-block ls -C ''
	assert_failure 2
	run --separate-stderr opt-block init ''
	assert_failure 2
	[[ $stderr == "opt-block: the store directory is empty"* ]] || fail "stderr: $stderr"
	run --separate-stderr opt-sync clone "$TMP/w/.opt" ''
	assert_failure 2
	# nothing was written to the store that was found
	run git --git-dir="$TMP/w/.opt" for-each-ref refs/opt/collections/
	assert_output ''
	# an empty OPT_STORE is documented as unset: the nearest .opt
	OPT_STORE= run opt-tree put t a 1
	assert_success
}

# ---- records ----

@test "a tree record with a member other than key and value is refused, naming the line" {
	opt-tree put t a 1 >/dev/null
	# the bulk path (text) and the JSON path (a real declines the fast path), into an empty tree and not
	for tree in t fresh; do
		for rec in '{"key":"b","value":2,"x":1}' '{"key":"b","value":2.5,"x":1}' '{"x":1,"value":[1],"key":"b"}'; do
			run --separate-stderr opt-tree put "$tree" <<<"{\"key\":\"z\",\"value\":0}
$rec"
			assert_failure 2
			assert_equal "$stderr" "opt-tree: line 2: unknown member 'x' in the record (a record is {\"key\": K, \"value\": V}) (nothing written)"
		done
	done
	run --separate-stderr opt-tree put t --each <<<'{"key":"b","value":2,"x":1}'
	assert_failure 2
	assert_equal "$stderr" "opt-tree: line 1: unknown member 'x' in the record (a record is {\"key\": K, \"value\": V})"
	run opt-tree range t
	assert_output '{"key":"a","value":1}'
	run opt-tree ls
	assert_output '{"collection":"t","count":1,"rev":1}'
	# get and del take records (what range prints) with --json-keys: the same rule
	run --separate-stderr opt-tree get t --json-keys - <<<'{"key":"a","value":1,"x":1}'
	assert_failure 2
	assert_equal "$stderr" "opt-tree: line 1: unknown member 'x' in the record (a record is {\"key\": K, \"value\": V})"
	run --separate-stderr opt-tree del t --json-keys - <<<'{"key":"a","x":1}'
	assert_failure 2
	assert_equal "$stderr" "opt-tree: line 1: unknown member 'x' in the record (a record is {\"key\": K, \"value\": V})"
	run opt-tree range t
	assert_output '{"key":"a","value":1}'
	run bash -c 'opt-tree range t | opt-tree get t --json-keys -'
	assert_success
	assert_output '{"key":"a","value":1}'
	run bash -c 'opt-tree range t | opt-tree del t --json-keys -'
	assert_success
	run opt-tree count t
	assert_output 0
}

# ---- numbers ----

@test "a number too small for a double (it would read as 0) is refused as one too large is" {
	tiny=1e-400
	zeros="0.$(printf '0%.0s' $(seq 400))1"
	for n in "$tiny" -1e-400 "$zeros" 2e-324; do
		run --separate-stderr opt-tree put -- t x "$n"
		assert_failure 2
		[[ $stderr == "opt-tree: VALUE is not valid JSON (real number underflow near '${n:0:20}"* ]] || fail "$n: $stderr"
		run --separate-stderr opt-tree put t <<<"{\"key\":\"a\",\"value\":1}
{\"key\":\"x\",\"value\":[{\"n\":$n}]}"
		assert_failure 2
		[[ $stderr == "opt-tree: line 2: invalid JSON: real number underflow near '${n:0:20}"*"(nothing written)" ]] || fail "$n: $stderr"
	done
	run --separate-stderr opt-tree put t <<<'{"key":1e-400,"value":1}'
	assert_failure 2
	assert_equal "$stderr" "opt-tree: line 1: invalid JSON: real number underflow near '1e-400' (nothing written)"
	run --separate-stderr opt-tree put t --each <<<'{"key":"x","value":1e-400}'
	assert_failure 2
	run --separate-stderr opt-tree put t x 1e400
	assert_failure 2
	assert_equal "$stderr" "opt-tree: VALUE is not valid JSON (real number overflow near '1e400'): 1e400; try 'opt-tree put --help'"
	run --separate-stderr opt-diary append d '{"t":1e-400}'
	assert_failure 2
	assert_equal "$stderr" "opt-diary: argument 1: invalid JSON: real number underflow near '1e-400' (nothing written)"
	run --separate-stderr opt-diary append d <<<'{"t":1e-400}'
	assert_failure 2
	assert_equal "$stderr" "opt-diary: line 1: invalid JSON: real number underflow near '1e-400' (nothing written)"
	run --separate-stderr opt-block put -c c <<<'{"v":1E-999}'
	assert_failure 2
	[[ $stderr == "opt-block: line 1: invalid JSON: real number underflow near '1E-999'"* ]] || fail "stderr: $stderr"
	run --separate-stderr opt-log commit <<<'{"collections":{"t":[{"type":"put","key":"x","value":-1e-400}]}}'
	assert_failure 2
	[[ $stderr == "opt-log: line 1: invalid JSON: real number underflow near '-1e-400'"* ]] || fail "stderr: $stderr"
	run opt-block ls
	assert_output ''
	# zeros are zeros, and what a double holds (a subnormal too) is kept
	run opt-tree put t --json-keys <<<'{"key":"z","value":[0e-400,0.0,-0.0,0E5,1e-310,4.9e-324,"1e-400"]}'
	assert_success
	run opt-tree get t z
	assert_output '{"key":"z","value":[0.0,0.0,-0.0,0.0,9.99999999999997e-311,4.94065645841247e-324,"1e-400"]}'
}

# ---- keys ----

# str N: N x's
str() { head -c "$1" /dev/zero | tr '\0' x; }

@test "a key is at most 4096 bytes of canonical JSON: the limit is written and read, one more is refused" {
	k4094=$(str 4094)    # "..." is 4096 bytes
	k4095=$(str 4095)
	run opt-tree put t "$k4094" 1
	assert_success
	run --separate-stderr opt-tree put t "$k4095" 2
	assert_failure 2
	assert_equal "$stderr" "opt-tree: the key is 4097 bytes; the limit is 4096 bytes of canonical JSON"
	# stdin: into an empty tree (built from text), into one with records, as JSON, one by one
	for tree in fresh t; do
		run --separate-stderr opt-tree put "$tree" <<<"{\"key\":\"a\",\"value\":1}
{\"key\":\"$k4095\",\"value\":2}"
		assert_failure 2
		assert_equal "$stderr" "opt-tree: line 2: the key is 4097 bytes; the limit is 4096 bytes of canonical JSON (nothing written)"
		run --separate-stderr opt-tree put "$tree" <<<"{\"key\":\"$k4095\",\"value\":2.5}"
		assert_failure 2
		assert_equal "$stderr" "opt-tree: line 1: the key is 4097 bytes; the limit is 4096 bytes of canonical JSON (nothing written)"
	done
	run --separate-stderr opt-tree put t --each <<<"{\"key\":\"$k4095\",\"value\":2}"
	assert_failure 2
	assert_equal "$stderr" "opt-tree: line 1: the key is 4097 bytes; the limit is 4096 bytes of canonical JSON"
	# canonical bytes: 700 control characters are 4202 bytes written as \u0001
	ctl=$(printf '\\u0001%.0s' $(seq 700))
	run --separate-stderr opt-tree put t <<<"{\"key\":\"$ctl\",\"value\":2}"
	assert_failure 2
	assert_equal "$stderr" "opt-tree: line 1: the key is 4202 bytes; the limit is 4096 bytes of canonical JSON (nothing written)"
	# a composite key counts whole
	run --separate-stderr opt-tree put t --json-keys "[1,\"$k4094\"]" 3
	assert_failure 2
	assert_equal "$stderr" "opt-tree: the key is 4100 bytes; the limit is 4096 bytes of canonical JSON"
	run --separate-stderr opt-log commit <<<"{\"collections\":{\"t\":[{\"type\":\"put\",\"key\":\"$k4095\",\"value\":1}]}}"
	assert_failure 2
	[[ $stderr == "opt-log: line 1: collection 't', action 1: the key is 4097 bytes; the limit is 4096 bytes of canonical JSON"* ]] ||
		fail "stderr: $stderr"
	# the 1 MiB key of the report
	run --separate-stderr opt-tree put t < <(printf '{"key":"%s","value":1}\n' "$(str 1048576)")
	assert_failure 2
	assert_equal "$stderr" "opt-tree: line 1: the key is 1048578 bytes; the limit is 4096 bytes of canonical JSON (nothing written)"
	# nothing but the first put was written; the key at the limit reads back, and the log verifies
	assert_equal "$(rev_of t)" 1
	run opt-block ls -c fresh
	assert_failure 1
	run opt-tree get t "$k4094"
	assert_success
	assert_output "{\"key\":\"$k4094\",\"value\":1}"
	run opt-log verify t
	assert_success
	# a longer key can still be looked up (exit 1: not there) and deleted by name
	run opt-tree get t "$k4095"
	assert_failure 1
	run opt-tree del t "$k4095"
	assert_failure 1
}

# ---- nesting ----
#
# A stored document (a block, and the log block that holds an entry) may
# nest 2048 levels, counting as the JSON parser does: a value is a level,
# each array or object around it one more.  deep N: N levels of arrays.
deep() { printf "%${1}s" '' | tr ' ' '['; printf "%${1}s" '' | tr ' ' ']'; }

# the collection's revision stays $2, it reads and verifies, and a later
# write still works
still_ok() {
	assert_equal "$(rev_of "$1")" "$2"
	run opt-log verify "$1"
	assert_success
	run opt-log show "$1"
	assert_success
}

@test "nesting: opt-tree put takes a value of 2043 levels (its log entry: 2048) and refuses 2044" {
	run opt-tree put t a "$(deep 2043)"
	assert_success
	run --separate-stderr opt-tree put t b "$(deep 2044)"
	assert_failure 2
	assert_equal "$stderr" "opt-tree: nested too deeply: the log entry would nest more than 2048 levels, the most a stored document may"
	still_ok t 1
	run opt-tree get t a
	assert_success
	assert_equal "$output" "{\"key\":\"a\",\"value\":$(deep 2043)}"
	run opt-tree put t c 1
	assert_success
	# records from stdin: into an empty tree (leaves built from text), into one with records, one by one
	for tree in fresh t; do
		run --separate-stderr opt-tree put "$tree" < <(echo '{"key":"x","value":1}'; echo "{\"key\":\"y\",\"value\":$(deep 2044)}")
		assert_failure 2
		[[ $stderr == "opt-tree: "*"nested too deeply: the log entry would nest more than 2048 levels, the most a stored document may" ]] ||
			fail "stderr: $stderr"
	done
	run --separate-stderr opt-tree put t --each < <(echo "{\"key\":\"y\",\"value\":$(deep 2044)}")
	assert_failure 2
	run opt-block ls -c fresh
	assert_failure 1
	still_ok t 2
	run opt-tree put fresh < <(echo '{"key":"x","value":1}'; echo "{\"key\":\"y\",\"value\":$(deep 2043)}")
	assert_success
	still_ok fresh 1
	run opt-tree put fresh --each < <(echo "{\"key\":\"z\",\"value\":$(deep 2043)}")
	assert_success
	still_ok fresh 2
	# a key nests in the log as deep as a value does
	run opt-tree put t --json-keys "$(deep 2044)" 1
	assert_failure 2
	run opt-tree put t --json-keys "[$(deep 2043)]" 1
	assert_failure 2
	still_ok t 2
	# deeper still: the leaf itself would be too deep, the message names it
	run --separate-stderr opt-tree put t b "$(deep 2046)"
	assert_failure 2
	[[ $stderr =~ ^"opt-tree: nested too deeply: block '"[a-z2-7]+"' would nest more than 2048 levels, the most a stored document may"$ ]] ||
		fail "stderr: $stderr"
	still_ok t 2
}

@test "nesting: opt-diary append takes an entry of 2043 levels and refuses 2044" {
	run opt-diary append d "$(deep 2043)"
	assert_success
	run --separate-stderr opt-diary append d "$(deep 2044)"
	assert_failure 2
	assert_equal "$stderr" "opt-diary: nested too deeply: the log entry would nest more than 2048 levels, the most a stored document may"
	run --separate-stderr opt-diary append d < <(deep 2044; echo)
	assert_failure 2
	still_ok d 1
	run opt-diary read d
	assert_equal "$output" "$(deep 2043)"
	run opt-diary append d '"next"'
	assert_success
}

@test "nesting: opt-log commit takes a value of 2043 levels and refuses 2044" {
	run opt-log commit < <(echo "{\"collections\":{\"t\":[{\"type\":\"put\",\"key\":\"a\",\"value\":$(deep 2043)}],\"d\":[{\"type\":\"append\",\"entry\":$(deep 2043)}]}}")
	assert_success
	run --separate-stderr opt-log commit < <(echo "{\"collections\":{\"t\":[{\"type\":\"put\",\"key\":\"b\",\"value\":$(deep 2044)}]}}")
	assert_failure 2
	[[ $stderr == "opt-log: "*"nested too deeply: the log entry would nest more than 2048 levels, the most a stored document may" ]] ||
		fail "stderr: $stderr"
	run --separate-stderr opt-log commit < <(echo "{\"collections\":{\"t\":[{\"type\":\"put\",\"key\":\"b\",\"value\":1}],\"d\":[{\"type\":\"append\",\"entry\":$(deep 2044)}]}}")
	assert_failure 2
	still_ok t 1
	still_ok d 1
	run opt-tree get t a
	assert_equal "$output" "{\"key\":\"a\",\"value\":$(deep 2043)}"
	run opt-log commit <<<'{"collections":{"t":[{"type":"put","key":"b","value":1}]}}'
	assert_success
}

@test "nesting: opt-block put takes a block of 2048 levels, apply and transform a value of 2041 (their log entry: 2048)" {
	run opt-block put -c c < <(echo "{\"header\":{\"id\":\"aaaaaaaaaaaaaaaaaaaaaaaaaa\",\"type\":\"t\"},\"v\":$(deep 2047)}")
	assert_success
	# 2049 levels: the parser refuses it before anything else does
	run --separate-stderr opt-block put -c c < <(echo "{\"header\":{\"id\":\"bbbbbbbbbbbbbbbbbbbbbbbbbb\",\"type\":\"t\"},\"v\":$(deep 2048)}")
	assert_failure 2
	[[ $stderr == "opt-block: line 1: invalid JSON: maximum parsing depth reached"* ]] || fail "stderr: $stderr"
	still_ok c 1
	run opt-block get -c c aaaaaaaaaaaaaaaaaaaaaaaaaa
	assert_equal "$output" "{\"header\":{\"collection\":\"c\",\"id\":\"aaaaaaaaaaaaaaaaaaaaaaaaaa\",\"type\":\"t\"},\"v\":$(deep 2047)}"
	# apply: the op's value sits 7 levels down in the log entry
	run opt-block apply -c c aaaaaaaaaaaaaaaaaaaaaaaaaa < <(echo "[\"w\",0,0,{\"a\":$(deep 2040)}]")
	assert_success
	run --separate-stderr opt-block apply -c c aaaaaaaaaaaaaaaaaaaaaaaaaa < <(echo "[\"w\",0,0,{\"a\":$(deep 2041)}]")
	assert_failure 2
	assert_equal "$stderr" "opt-block: nested too deeply: the log entry would nest more than 2048 levels, the most a stored document may"
	still_ok c 2
	# transform: an inserted block, too
	run opt-block transform -c c < <(echo "{\"inserts\":{\"cccccccccccccccccccccccccc\":{\"header\":{\"id\":\"cccccccccccccccccccccccccc\",\"type\":\"t\"},\"v\":$(deep 2040)}}}")
	assert_success
	run --separate-stderr opt-block transform -c c < <(echo "{\"inserts\":{\"dddddddddddddddddddddddddd\":{\"header\":{\"id\":\"dddddddddddddddddddddddddd\",\"type\":\"t\"},\"v\":$(deep 2041)}}}")
	assert_failure 2
	assert_equal "$stderr" "opt-block: nested too deeply: the log entry would nest more than 2048 levels, the most a stored document may"
	still_ok c 3
	echo '{"header":{"id":"eeeeeeeeeeeeeeeeeeeeeeeeee","type":"t"}}' | opt-block put -c c >/dev/null
	still_ok c 4
}
