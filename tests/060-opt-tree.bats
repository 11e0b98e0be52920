#!/usr/bin/env bats
# opt-tree: every verb and option as a user notices them — records in and
# out, revisions, bounds, key order, bad input — and a randomized run
# against a model kept in bash.

load test_helper

# The number of revisions (commits) of collection $1.
revs() {
	git --git-dir="$OPT_STORE" rev-list --count "refs/opt/collections/$1"
}

# A tree "users" of three records, written in one transaction (rev 1).
users() {
	opt-tree put users >/dev/null <<'EOF'
{"key":"alice","value":{"age":31}}
{"key":"bob","value":{"age":27}}
{"key":"carol","value":{"age":45}}
EOF
}

# The keys that `opt-tree range "$@"` prints, one compact JSON a line.
range_keys() {
	opt-tree range "$@" | jq -c .key
}

# --- put ---

@test "put NAME KEY VALUE: VALUE is JSON; one revision; get reads it back" {
	run --separate-stderr opt-tree put users alice '{"age":31,"langs":["c","sh"]}'
	assert_success
	assert_output '{"collection":"users","rev":1,"put":1}'
	[ -z "$stderr" ]
	run opt-tree get users alice
	assert_success
	assert_output '{"key":"alice","value":{"age":31,"langs":["c","sh"]}}'
	# any JSON is a value: a string, a number, null, an array
	opt-tree put users s '"text"' >/dev/null
	opt-tree put users n 1.5 >/dev/null
	opt-tree put users z null >/dev/null
	run opt-tree put users a '[1,{"b":false}]'
	assert_output '{"collection":"users","rev":5,"put":1}'
	run opt-tree get users s n z a
	assert_output $'{"key":"s","value":"text"}\n{"key":"n","value":1.5}\n{"key":"z","value":null}\n{"key":"a","value":[1,{"b":false}]}'
	[ "$(revs users)" -eq 5 ]
	# a VALUE that is not JSON is refused (exit 2) and nothing is written
	run --separate-stderr opt-tree put users bob notjson
	assert_failure 2
	[[ $stderr == "opt-tree: VALUE is not valid JSON"* ]]
	[[ $stderr == *"; try 'opt-tree put --help'" ]]
	[ "$(revs users)" -eq 5 ]
}

@test "put replaces the value of an existing key; the count stays" {
	users
	run opt-tree put users bob '{"age":28}'
	assert_success
	assert_output '{"collection":"users","rev":2,"put":1}'
	run opt-tree get users bob
	assert_output '{"key":"bob","value":{"age":28}}'
	run opt-tree count users
	assert_output 3
}

@test "put from stdin: every record of the input is one revision" {
	run opt-tree put users <<'EOF'
{"key":"alice","value":1}
{"key":"bob","value":2}
{"key":"carol","value":3}
{"key":"dave","value":4}
EOF
	assert_success
	assert_output '{"collection":"users","rev":1,"put":4}'
	[ "$(revs users)" -eq 1 ]
	# any white space between records will do; a later key wins
	run opt-tree put users <<<'{"key":"erin","value":5} {"key":"frank","value":6}
	  {"key":"erin","value":55}'
	assert_success
	assert_output '{"collection":"users","rev":2,"put":3}'
	[ "$(revs users)" -eq 2 ]
	run opt-tree get users erin
	assert_output '{"key":"erin","value":55}'
	run opt-tree count users
	assert_output 6
	# empty input writes nothing and creates nothing
	run opt-tree put other </dev/null
	assert_success
	assert_output ''
	run -1 opt-tree count other
}

@test "put --each: one revision per record, each acknowledged with its key" {
	run --separate-stderr opt-tree put users --each <<'EOF'
{"key":"alice","value":1}
{"key":"bob","value":2}
{"key":"carol","value":3}
EOF
	assert_success
	assert_output - <<'EOF'
{"collection":"users","rev":1,"key":"alice"}
{"collection":"users","rev":2,"key":"bob"}
{"collection":"users","rev":3,"key":"carol"}
EOF
	[ "$(revs users)" -eq 3 ]
	run opt-tree count users
	assert_output 3
	# a longer stream, written by a slow producer, and one from a file
	for i in $(seq 1 600); do printf '{"key":"k%03d","value":%d}\n' "$i" "$i"; done >"$TMP/600"
	(head -n 5 "$TMP/600"; sleep 0.3; tail -n +6 "$TMP/600") | opt-tree put slow -e >"$TMP/ack"
	[ "$(wc -l <"$TMP/ack")" -eq 600 ]
	[ "$(revs slow)" -eq 600 ]
	run opt-tree count slow
	assert_output 600
	opt-tree put file --each <"$TMP/600" >"$TMP/ack2"
	[ "$(wc -l <"$TMP/ack2")" -eq 600 ]
	[ "$(sed 's/.*"rev":\([0-9]*\).*/\1/' "$TMP/ack2" | sort -n | uniq | wc -l)" -eq 600 ]
	run opt-tree count file
	assert_output 600
}

@test "put --each: a bad record stops the command; the records before it stay" {
	run --separate-stderr opt-tree put users --each <<'EOF'
{"key":"alice","value":1}
{"key":"bob","value":2}
{"key":"carol"}
{"key":"dave","value":4}
EOF
	assert_failure 2
	[[ $stderr == *"line 3"* ]]
	run opt-tree get users alice bob
	assert_success
	run -1 opt-tree get users carol
	run -1 opt-tree get users dave
	[ "$(revs users)" -eq 2 ]
	# KEY VALUE operands with --each is a usage error
	run --separate-stderr opt-tree put users --each k 1
	assert_failure 2
	[[ $stderr == *"--each reads records from stdin"* ]]
}

@test "put --json-keys: the KEY operand is JSON" {
	opt-tree put t --json-keys 42 '"number"' >/dev/null
	opt-tree put t -j '"42"' '"string"' >/dev/null
	opt-tree put t --json-keys '[1,"a"]' '"array"' >/dev/null
	run opt-tree range t
	assert_output - <<'EOF'
{"key":42,"value":"number"}
{"key":"42","value":"string"}
{"key":[1,"a"],"value":"array"}
EOF
	# without it the operand is a string, whatever it looks like
	opt-tree put t '[1,"a"]' '"plain"' >/dev/null
	run opt-tree get t '[1,"a"]'
	assert_output '{"key":"[1,\"a\"]","value":"plain"}'
	run --separate-stderr opt-tree put t --json-keys '{"a":1}' 1
	assert_failure 2
	[[ $stderr == *"is not a key"* ]]
	run opt-tree put t --json-keys 'nope' 1
	assert_failure 2
}

@test "--capacity: stored in the tree's header; small nodes make a deep tree that reads back in order" {
	opt-tree put big k 1 >/dev/null
	run opt-tree stat big
	assert_output --partial '"capacity":64,'
	for i in $(seq 1 400); do printf '{"key":%d,"value":"v%d"}\n' $(((i * 7919) % 400)) "$i"; done |
		opt-tree put small --capacity 4 >/dev/null
	run opt-tree stat small
	assert_output --partial '"count":400,'
	assert_output --partial '"capacity":4,'
	depth=$(opt-tree stat small | jq .depth)
	[ "$depth" -gt 2 ] || fail "depth $depth with capacity 4 and 400 keys"
	[ "$(opt-tree stat small | jq .blocks)" -gt 100 ]
	run bash -c "opt-tree range small | jq -c .key | tr '\n' ' '"
	assert_output "$(seq 0 399 | tr '\n' ' ')"
	run bash -c "opt-tree range small --reverse | jq -c .key | tr '\n' ' '"
	assert_output "$(seq 399 -1 0 | tr '\n' ' ')"
	run opt-tree get small --json-keys 0 200 399
	assert_success
	assert_equal "$(wc -l <<<"$output")" 3
	# a later --capacity does not change an existing tree
	opt-tree put small 1000 1 --capacity 128 >/dev/null
	run opt-tree stat small
	assert_output --partial '"capacity":4,'
	# the limits
	run --separate-stderr opt-tree put t k 1 --capacity 3
	assert_failure 2
	[[ $stderr == *"--capacity must be between 4 and 4096"* ]]
	run opt-tree put t k 1 --capacity 4097
	assert_failure 2
	run opt-tree put t k 1 --capacity x
	assert_failure 2
	run -1 opt-tree count t
}

# --- get ---

@test "get: several keys in the order given; keys from stdin, one a line" {
	users
	run --separate-stderr opt-tree get users carol alice
	assert_success
	assert_output $'{"key":"carol","value":{"age":45}}\n{"key":"alice","value":{"age":31}}'
	[ -z "$stderr" ]
	run opt-tree get users - <<<$'bob\ncarol'
	assert_success
	assert_output $'{"key":"bob","value":{"age":27}}\n{"key":"carol","value":{"age":45}}'
	# operands and - mix; a stdin line that is a JSON string is that string
	run opt-tree get users alice - <<<'bob'
	assert_output $'{"key":"alice","value":{"age":31}}\n{"key":"bob","value":{"age":27}}'
	run --separate-stderr opt-tree get users - <<<'"bob"'
	assert_success
	assert_output '{"key":"bob","value":{"age":27}}'
	run --separate-stderr opt-tree get users - <<<'"bob" '
	assert_success
	# any other line is the key as it is, quotes and all
	run --separate-stderr opt-tree get users - <<<'"bob'
	assert_failure 1
	assert_equal "$stderr" "opt-tree: no key \"\\\"bob\" in tree 'users'"
	# no key at all is a usage error
	run --separate-stderr opt-tree get users
	assert_failure 2
	[[ $stderr == *"no key given"* ]]
}

@test "get --json-keys: operands and stdin lines are JSON; a {\"key\"} record works too" {
	opt-tree put t <<'EOF' >/dev/null
{"key":2,"value":"two"}
{"key":"2","value":"string two"}
{"key":[1,"a"],"value":"pair"}
EOF
	run opt-tree get t --json-keys 2 '"2"' '[1,"a"]'
	assert_success
	assert_output $'{"key":2,"value":"two"}\n{"key":"2","value":"string two"}\n{"key":[1,"a"],"value":"pair"}'
	run opt-tree get t -j - <<<$'[1,"a"]\n2\n{"key":"2","value":"ignored"}'
	assert_success
	assert_output $'{"key":[1,"a"],"value":"pair"}\n{"key":2,"value":"two"}\n{"key":"2","value":"string two"}'
	# range output feeds get
	run bash -c 'opt-tree range t | opt-tree get t --json-keys -'
	assert_success
	assert_output "$(opt-tree range t)"
	run --separate-stderr opt-tree get t --json-keys - <<<'true'
	assert_failure 2
	[[ $stderr == *"line 1: not a key"* ]]
	run opt-tree get t --json-keys 'not json'
	assert_failure 2
}

@test "get: an absent key is named on stderr, exit 1; the others are still printed" {
	users
	run --separate-stderr opt-tree get users alice zed bob
	assert_failure 1
	assert_output $'{"key":"alice","value":{"age":31}}\n{"key":"bob","value":{"age":27}}'
	assert_equal "$stderr" "opt-tree: no key \"zed\" in tree 'users'"
	run --separate-stderr opt-tree get users --json-keys 7
	assert_failure 1
	assert_equal "$stderr" "opt-tree: no key 7 in tree 'users'"
}

@test "get: absent keys then a bad one: the records and messages before it in order, then its message; exit 2" {
	users
	run --separate-stderr opt-tree get users --json-keys '"carol"' '"zed"' '"alice"' '{' '"bob"'
	assert_failure 2
	assert_output $'{"key":"carol","value":{"age":45}}\n{"key":"alice","value":{"age":31}}'
	assert_equal "${stderr_lines[0]}" "opt-tree: no key \"zed\" in tree 'users'"
	[[ ${stderr_lines[1]} == "opt-tree: key is not valid JSON"* ]]
	printf '"carol"\n"zed"\n"alice"\ntrue\n"bob"\n' >"$TMP/keys"
	for how in file pipe; do
		if [ $how = file ]; then
			run --separate-stderr opt-tree get users -j - <"$TMP/keys"
		else
			run --separate-stderr bash -c "cat '$TMP/keys' | opt-tree get users -j -"
		fi
		assert_failure 2
		assert_output $'{"key":"carol","value":{"age":45}}\n{"key":"alice","value":{"age":31}}'
		assert_equal "$stderr" $'opt-tree: no key "zed" in tree \'users\'\nopt-tree: line 4: not a key'
	done
}

@test "get: many keys in any order, repeated and absent ones, from a file or a pipe that pauses: records in the order given" {
	# a tree of many small leaves; keys are looked up in sorted batches
	for i in $(seq 1 400); do printf '{"key":"k%03d","value":{"n":%d}}\n' "$i" "$i"; done |
		opt-tree put t --capacity 4 >/dev/null
	for i in 7 400 1 7 250 999 3 128 128 0 64; do echo "k$(printf %03d "$i")"; done >"$TMP/keys"
	expect() {
		while read -r k; do
			n=$((10#${k#k}))
			if [ "$n" -ge 1 ] && [ "$n" -le 400 ]; then printf '{"key":"%s","value":{"n":%d}}\n' "$k" "$n"; fi
		done <"$TMP/keys"
	}
	run --separate-stderr opt-tree get t - <"$TMP/keys"
	assert_failure 1
	assert_output "$(expect)"
	assert_equal "$stderr" $'opt-tree: no key "k999" in tree \'t\'\nopt-tree: no key "k000" in tree \'t\''
	# operands too, and JSON keys
	run --separate-stderr opt-tree get t $(cat "$TMP/keys")
	assert_output "$(expect)"
	run --separate-stderr opt-tree get t -j - < <(sed 's/.*/"&"/' "$TMP/keys")
	assert_output "$(expect)"
	# keys that come in two bursts through a pipe: the first ones are
	# looked up without waiting for the rest
	run --separate-stderr bash -c "{ head -4 '$TMP/keys'; sleep 0.3; tail -n +5 '$TMP/keys'; } | opt-tree get t -"
	assert_failure 1
	assert_output "$(expect)"
}

# --- del ---

@test "del: the count goes down; one revision; absent keys exit 1 but the others go" {
	users
	run --separate-stderr opt-tree del users bob
	assert_success
	assert_output '{"collection":"users","rev":2,"key":"bob","deleted":true}'
	[ -z "$stderr" ]
	run opt-tree count users
	assert_output 2
	run -1 opt-tree get users bob
	run --separate-stderr opt-tree del users alice zed carol yves
	assert_failure 1
	assert_output $'{"collection":"users","rev":3,"key":"alice","deleted":true}\n{"collection":"users","rev":3,"key":"carol","deleted":true}'
	assert_equal "$stderr" "opt-tree: no key \"zed\" in tree 'users'"$'\n'"opt-tree: no key \"yves\" in tree 'users'"
	run opt-tree count users
	assert_output 0
	[ "$(revs users)" -eq 3 ]
	# deleting nothing makes no revision
	run --separate-stderr opt-tree del users alice
	assert_failure 1
	assert_output ''
	[ "$(revs users)" -eq 3 ]
	# the old revisions still have them
	run opt-tree count users --rev 2
	assert_output 2
	run --separate-stderr opt-tree del users
	assert_failure 2
	[[ $stderr == *"no key given"* ]]
}

@test "del: keys from stdin; range output piped into del --json-keys -" {
	opt-tree put t <<'EOF' >/dev/null
{"key":1,"value":"a"}
{"key":2,"value":"b"}
{"key":"x","value":"c"}
{"key":"y","value":"d"}
{"key":[1],"value":"e"}
EOF
	run opt-tree del t - <<<$'x\ny'
	assert_success
	assert_output $'{"collection":"t","rev":2,"key":"x","deleted":true}\n{"collection":"t","rev":2,"key":"y","deleted":true}'
	run opt-tree del t --json-keys - <<<$'1\n[1]'
	assert_success
	assert_output $'{"collection":"t","rev":3,"key":1,"deleted":true}\n{"collection":"t","rev":3,"key":[1],"deleted":true}'
	opt-tree put t <<'EOF' >/dev/null
{"key":"a1","value":1}
{"key":"a2","value":2}
{"key":"b1","value":3}
EOF
	run bash -c 'opt-tree range t --from a --before b | opt-tree del t --json-keys -'
	assert_success
	assert_output $'{"collection":"t","rev":5,"key":"a1","deleted":true}\n{"collection":"t","rev":5,"key":"a2","deleted":true}'
	run range_keys t
	assert_output $'2\n"b1"'
	# without --json-keys a record line is a (missing) string key
	run --separate-stderr bash -c 'opt-tree range t | opt-tree del t -'
	assert_failure 1
	assert_output ''
}

# --- range ---

@test "range: --from/--to inclusive, --after/--before exclusive, bounds between keys" {
	for k in b d f h j; do echo "{\"key\":\"$k\",\"value\":\"$k\"}"; done | opt-tree put t >/dev/null
	run range_keys t
	assert_output $'"b"\n"d"\n"f"\n"h"\n"j"'
	run range_keys t --from d --to h
	assert_output $'"d"\n"f"\n"h"'
	run range_keys t --after d --before h
	assert_output '"f"'
	run range_keys t --from d --before h
	assert_output $'"d"\n"f"'
	run range_keys t --after d --to h
	assert_output $'"f"\n"h"'
	# bounds that are not keys of the tree
	run range_keys t --from c --to g
	assert_output $'"d"\n"f"'
	run range_keys t --after c --before g
	assert_output $'"d"\n"f"'
	run range_keys t --from e
	assert_output $'"f"\n"h"\n"j"'
	run range_keys t --before e
	assert_output $'"b"\n"d"'
	run range_keys t --from a --to z
	assert_output $'"b"\n"d"\n"f"\n"h"\n"j"'
	# a bound on one key
	run range_keys t --from f --to f
	assert_output '"f"'
	run range_keys t --after f --before f
	assert_output ''
	# empty results are not errors
	run opt-tree range t --from x
	assert_success
	assert_output ''
	run opt-tree range t --after j
	assert_success
	assert_output ''
	run opt-tree range t --from c --to c
	assert_success
	assert_output ''
	# the records themselves
	run opt-tree range t --from j
	assert_output '{"key":"j","value":"j"}'
}

@test "range --reverse and --limit, alone and with bounds" {
	for k in b d f h j; do echo "{\"key\":\"$k\",\"value\":0}"; done | opt-tree put t >/dev/null
	run range_keys t --reverse
	assert_output $'"j"\n"h"\n"f"\n"d"\n"b"'
	run range_keys t -r --from d --before j
	assert_output $'"h"\n"f"\n"d"'
	run range_keys t --reverse --after c --to h
	assert_output $'"h"\n"f"\n"d"'
	run range_keys t --limit 2
	assert_output $'"b"\n"d"'
	run range_keys t --reverse --limit 2
	assert_output $'"j"\n"h"'
	run range_keys t -n 1 --after d
	assert_output '"f"'
	run range_keys t --reverse -n 2 --before h
	assert_output $'"f"\n"d"'
	run range_keys t --limit 99
	assert_equal "$(wc -l <<<"$output")" 5
	run opt-tree range t --limit 0
	assert_success
	assert_output ''
	run --separate-stderr opt-tree range t --limit -1
	assert_failure 2
	[[ $stderr == *"--limit needs a whole number"* ]]
	run opt-tree range t --limit x
	assert_failure 2
}

@test "range --json-keys: bounds are JSON; without it a bound is a string" {
	opt-tree put t <<'EOF' >/dev/null
{"key":2,"value":0}
{"key":10,"value":0}
{"key":"10","value":0}
{"key":"2","value":0}
{"key":[1,"a"],"value":0}
EOF
	run range_keys t --json-keys --from 2 --to 10
	assert_output $'2\n10'
	run range_keys t --from 10 --to 2
	assert_output $'"10"\n"2"'
	run range_keys t -j --after 10 --before '[1,"a"]'
	assert_output $'"10"\n"2"'
	run range_keys t --json-keys --from '[1]'
	assert_output '[1,"a"]'
	run range_keys t --json-keys --to 1.5e1
	assert_output $'2\n10'
	run --separate-stderr opt-tree range t --json-keys --from '{}'
	assert_failure 2
	[[ $stderr == *"is not a key"* ]]
	run opt-tree range t --json-keys --to null
	assert_failure 2
	run opt-tree range t --json-keys --to 'nope'
	assert_failure 2
}

@test "range: a lower bound above the upper one, or two of a side, is a usage error" {
	users
	run --separate-stderr opt-tree range users --from c --to b
	assert_failure 2
	[[ $stderr == "opt-tree: the lower bound is above the upper bound"* ]]
	assert_equal "$stderr" "opt-tree: the lower bound is above the upper bound; try 'opt-tree range --help'"
	run opt-tree range users --after c --before b
	assert_failure 2
	run opt-tree range users --json-keys --from 10 --to 2
	assert_failure 2
	# "10" < "2" as strings
	run opt-tree range users --from 10 --to 2
	assert_success
	run --separate-stderr opt-tree range users --from a --after a
	assert_failure 2
	[[ $stderr == *"--from and --after"* ]]
	run --separate-stderr opt-tree range users --to a --before a
	assert_failure 2
	[[ $stderr == *"--to and --before"* ]]
	run --separate-stderr opt-tree range users extra
	assert_failure 2
}

# --- key order ---

@test "key order: numbers (numerically) < strings (by UTF-8 bytes) < arrays (element-wise)" {
	# written in scrambled order, in two transactions
	opt-tree put t <<'EOF' >/dev/null
{"key":[2],"value":0}
{"key":"2","value":0}
{"key":10,"value":0}
{"key":[1,"b"],"value":0}
{"key":"é","value":0}
{"key":-3,"value":0}
{"key":"","value":0}
{"key":["a"],"value":0}
EOF
	opt-tree put t <<'EOF' >/dev/null
{"key":"10","value":0}
{"key":2,"value":0}
{"key":1.5,"value":0}
{"key":[1,"a"],"value":0}
{"key":"Z","value":0}
{"key":"z","value":0}
{"key":[],"value":0}
{"key":[1],"value":0}
{"key":[[1]],"value":0}
{"key":[1,2],"value":0}
EOF
	run range_keys t
	assert_output - <<'EOF'
-3
1.5
2
10
""
"10"
"2"
"Z"
"z"
"é"
[]
[1]
[1,2]
[1,"a"]
[1,"b"]
[2]
["a"]
[[1]]
EOF
	run bash -c "opt-tree range t --reverse | tac"
	assert_output "$(opt-tree range t)"
	# equal numbers are one key: 2 and 2.0
	run opt-tree get t --json-keys 2.0
	assert_success
	run opt-tree count t
	assert_output 18
}

@test "get and range read leaves as stored text: escapes, numbers and arrays come back exact" {
	# capacity 4: many leaves; keys whose stored text has escapes sort
	# by their characters, not by their escaped bytes
	python3 - >"$TMP/in" <<'PY'
import json, random
keys = ['k"q', 'k\\b', 'k\n', 'k1', 'k', 'kz', 'é', 'a\u0001', 7, -1.25, 1e20, 3, [1, 'x'], [1, 'x"'], []]
keys += ['u%03d' % i for i in range(60)]
random.Random(5).shuffle(keys)
for i, k in enumerate(keys):
    print(json.dumps({"key": k, "value": {"i": i, "s": 'v"\\\n%d' % i, "n": None}}))
PY
	opt-tree put t --capacity 4 <"$TMP/in" >/dev/null
	python3 - "$TMP/in" >"$TMP/want" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
def rank(k):
    if isinstance(k, (int, float)): return (0, k)
    if isinstance(k, str): return (1, k.encode())
    return (2, [rank(x) for x in k])
def canon(v): return json.dumps(v, sort_keys=True, separators=(',', ':'), ensure_ascii=False)
for r in sorted(recs, key=lambda r: rank(r["key"])):
    print('{"key":%s,"value":%s}' % (canon(r["key"]), canon(r["value"])))
PY
	run opt-tree range t
	assert_success
	assert_output "$(cat "$TMP/want")"
	run bash -c "opt-tree range t --reverse | tac"
	assert_output "$(cat "$TMP/want")"
	run bash -c "jq -c .key '$TMP/in' | opt-tree get t --json-keys - | sort"
	assert_success
	assert_output "$(sort "$TMP/want")"
	# bounds between keys with escapes: "k" < "k\n" < "k\"q" < "k1"
	run bash -c "opt-tree range t --json-keys --after '\"k\"' --before '\"k1\"' | jq -c .key"
	assert_output "$(printf '%s\n' '"k\n"' '"k\"q"')"
	run bash -c "opt-tree get t --json-keys '\"k\\\\b\"' --pretty | jq -c .key"
	assert_output '"k\\b"'
}

# --- count, ls, stat, --rev ---

@test "count prints a bare number; ls lists only the trees" {
	users
	run --separate-stderr opt-tree count users
	assert_success
	assert_output 3
	[ -z "$stderr" ]
	opt-tree put empty a 1 >/dev/null
	opt-tree del empty a >/dev/null
	run opt-tree count empty
	assert_output 0
	# a diary and a block collection are not listed
	opt-diary append journal '{"e":1}' >/dev/null
	echo '{"a":1}' | opt-block put -c blocks >/dev/null
	opt-tree put a/nested k 1 >/dev/null
	run --separate-stderr opt-tree ls
	assert_success
	assert_output - <<'EOF'
{"collection":"a/nested","count":1,"rev":1}
{"collection":"empty","count":0,"rev":2}
{"collection":"users","count":3,"rev":1}
EOF
	run --separate-stderr opt-tree ls extra
	assert_failure 2
	# a store without trees lists nothing
	run opt-tree ls --store "$TMP/none"
	assert_failure 7
	opt-block init "$TMP/bare" >/dev/null
	run opt-tree ls --store "$TMP/bare"
	assert_success
	assert_output ''
	run opt-tree count users extra
	assert_failure 2
}

@test "stat: revision, count, capacity, depth, blocks, transaction and time" {
	users
	run opt-tree stat users
	assert_success
	assert_output --regexp '^\{"collection":"users","rev":1,"count":3,"capacity":64,"depth":1,"blocks":[0-9]+,"trx":"[a-z2-7]{26}","time":[0-9]+\}$'
	now=$(date +%s)
	t=$(opt-tree stat users | jq .time)
	[ $((now - t)) -lt 600 ] && [ $((t - now)) -lt 600 ]
	# the trx is the one the log records for that revision
	if [ -x "$OPT_BIN/opt-log" ]; then
		run bash -c "opt-log show users | jq -r .trx"
		assert_output "$(opt-tree stat users | jq -r .trx)"
	fi
	opt-tree put users dave 1 >/dev/null
	run opt-tree stat users --rev 1
	assert_output --partial '"rev":1,"count":3,'
	run opt-tree stat users
	assert_output --partial '"rev":2,"count":4,'
	run opt-tree stat users extra
	assert_failure 2
}

@test "--rev N reads the tree as it was at revision N" {
	opt-tree put t a 1 >/dev/null
	opt-tree put t b 2 >/dev/null
	opt-tree put t a 10 >/dev/null
	opt-tree del t b >/dev/null
	run opt-tree get t a b --rev 2
	assert_success
	assert_output $'{"key":"a","value":1}\n{"key":"b","value":2}'
	run opt-tree get t a --rev 3
	assert_output '{"key":"a","value":10}'
	run -1 opt-tree get t b --rev 1
	run -1 opt-tree get t b
	run opt-tree range t --rev 2
	assert_output $'{"key":"a","value":1}\n{"key":"b","value":2}'
	run opt-tree range t --rev 3 --reverse --limit 1
	assert_output '{"key":"b","value":2}'
	run opt-tree count t --rev 1
	assert_output 1
	run opt-tree count t --rev 3
	assert_output 2
	run opt-tree count t
	assert_output 1
	# a revision that does not exist is not found; 0 or text is usage
	run --separate-stderr opt-tree get t a --rev 5
	assert_failure 1
	[[ $stderr == *"no revision 5"* ]]
	run opt-tree range t --rev 9
	assert_failure 1
	run opt-tree get t a --rev 0
	assert_failure 2
	run opt-tree count t --rev x
	assert_failure 2
}

@test "--pretty indents; --compact and the common options may come anywhere" {
	users
	run opt-tree --pretty get users bob
	assert_output $'{\n  "key": "bob",\n  "value": {\n    "age": 27\n  }\n}'
	run opt-tree get users bob --pretty --compact
	assert_output '{"key":"bob","value":{"age":27}}'
	run opt-tree get --store "$OPT_STORE" users bob
	assert_output '{"key":"bob","value":{"age":27}}'
	run env -u OPT_STORE opt-tree -C "$OPT_STORE" count users
	assert_output 3
	run opt-tree range users -n 1 --reverse -q
	assert_output '{"key":"carol","value":{"age":45}}'
}

# --- bad input ---

# Records for the bulk path: random key order, duplicate keys, keys of
# every kind, and values the fast canonicalizer handles and declines
# (reals, \u escapes, big integers, unsorted and nested objects).
bulk_records() {
	python3 - "$1" <<'PY'
import json, random, sys
rnd = random.Random(7)
n = int(sys.argv[1])
def value(i):
    k = i % 9
    if k == 0: return {"name": "User %d" % i, "email": "u%d@example.org" % i, "age": i % 90, "tags": ["a", "b"]}
    if k == 1: return i * 0.25
    if k == 2: return "caf\u00e9 \u2603 \"q\" \\ \t %d" % i
    if k == 3: return {"z": [1, {"y": None, "x": True}], "a": -i, "big": 1234567890123456789, "neg": -9223372036854775807}
    if k == 4: return [False, 1e100, -0.0, ""]
    return {"b": {"d": 4, "c": 3}, "a": "v%d" % i}
def key(i):
    k = i % 5
    if k == 0: return i
    if k == 1: return "user%08d" % i
    if k == 2: return "\u00e9t\u00e9-%d" % i
    if k == 3: return [i % 7, "x%d" % i]
    return i + 0.5
keys = [key(rnd.randrange(n)) for _ in range(n)]
for i, k in enumerate(keys):
    rec = {"value": value(i), "key": k}
    text = json.dumps(rec, ensure_ascii=(i % 3 == 0), separators=(",", ":") if i % 2 else (", ", ": "))
    print(text)
PY
}

@test "a bulk put into an empty tree holds what a put into a non-empty tree holds, in full leaves" {
	bulk_records 3000 >"$TMP/recs"
	# A: into an empty tree (the text path)
	opt-tree put a --capacity 8 <"$TMP/recs" >/dev/null
	# B: the same records into a tree that holds one of their keys already
	head -n 1 "$TMP/recs" | opt-tree put b --capacity 8 >/dev/null
	opt-tree put b <"$TMP/recs" >/dev/null
	diff <(opt-tree range a) <(opt-tree range b)
	[ "$(opt-tree count a)" = "$(opt-tree count b)" ]
	[ "$(opt-tree count a)" -gt 1500 ]
	# the logs hold the same actions, byte for byte (jq rewrites numbers,
	# 1.0 as 1: the hashes of their canonical bytes tell), and verify
	diff <(opt-log show a | jq -c .actions) <(opt-log show b --from 2 | jq -c .actions)
	diff <(opt-log show a | jq -r .actionsHash) <(opt-log show b --from 2 | jq -r .actionsHash)
	run opt-log verify a b
	assert_success
	assert_line --index 0 '{"collection":"a","entries":1,"rev":1,"ok":true}'
	assert_line --index 1 '{"collection":"b","entries":2,"rev":2,"ok":true}'
	# every block reads back as the canonical JSON stored
	opt-block ls -c a | jq -c .id >"$TMP/ids"
	[ "$(wc -l <"$TMP/ids")" -gt 200 ]
	opt-block get -c a - <"$TMP/ids" | jq -c . >"$TMP/blocks"
	[ "$(wc -l <"$TMP/blocks")" -eq "$(wc -l <"$TMP/ids")" ]
	# full leaves: all of 8 entries but the last two (at least 4 each)
	jq -r 'select(.header.type == "TL") | .entries | length' "$TMP/blocks" | sort -n | uniq -c >"$TMP/fill"
	run awk '$2 < 4 || $2 > 8 { bad = 1 } $2 < 8 { short += $1 } END { exit bad || short > 2 }' "$TMP/fill"
	assert_success
	[ "$(opt-tree stat a | jq .blocks)" -lt "$(opt-tree stat b | jq .blocks)" ]
	# and a later put and del work on it as on any tree
	opt-tree put a k '"v"' >/dev/null
	opt-tree del a k >/dev/null
	# emptied, it is loaded from text again
	opt-tree range a | jq -c .key | opt-tree del a --json-keys - >/dev/null
	[ "$(opt-tree count a)" -eq 0 ]
	opt-tree put a <"$TMP/recs" >/dev/null
	diff <(opt-tree range a) <(opt-tree range b)
	run opt-log verify a
	assert_success
	assert_output '{"collection":"a","entries":5,"rev":5,"ok":true}'
	fsck_ok
}

@test "bad records are refused with the line, exit 2, nothing written" {
	users
	local bad
	for bad in 'notjson' '{"key":"k"}' '{"value":1}' '{"key":{"a":1},"value":1}' '{"key":true,"value":1}' \
		'{"key":null,"value":1}' '{"key":[1,{}],"value":1}' '["k",1]' '"k"'; do
		run --separate-stderr opt-tree put users <<<"$bad"
		[ "$status" -eq 2 ] || fail "'$bad': exit $status"
		[[ $stderr == "opt-tree: line 1: "*"(nothing written)" ]] || fail "'$bad': $stderr"
	done
	run --separate-stderr opt-tree put users <<<'{"value":1}'
	[[ $stderr == *'no "key"'* ]]
	run --separate-stderr opt-tree put users <<<'{"key":"k"}'
	[[ $stderr == *'no "value"'* ]]
	run --separate-stderr opt-tree put users <<<'{"key":false,"value":1}'
	[[ $stderr == *"not a key"* ]]
	[ "$(revs users)" -eq 1 ]
	run opt-tree count users
	assert_output 3
	fsck_ok
}

@test "a value of more than 1 MiB of canonical JSON is refused; 1 MiB is fine" {
	local x
	x=$(head -c 1048574 /dev/zero | tr '\0' x)
	printf '{"key":"max","value":"%s"}\n' "$x" >"$TMP/max"
	printf '{"key":"over","value":"%sx"}\n' "$x" >"$TMP/over"
	run --separate-stderr opt-tree put t <"$TMP/over"
	assert_failure 2
	[[ $stderr == *"1048577 bytes; the limit is 1048576 bytes"* ]]
	run -1 opt-tree count t
	run opt-tree put t <"$TMP/max"
	assert_success
	run bash -c "opt-tree get t max | jq -r '.value | length'"
	assert_output 1048574
	# an object whose canonical form is over the limit
	printf '{"key":"obj","value":{"a":"%s","b":1}}\n' "$x" >"$TMP/obj"
	run opt-tree put t <"$TMP/obj"
	assert_failure 2
	run -1 opt-tree get t obj
}

@test "in a put of 5 records where the 3rd is bad, nothing is committed" {
	users
	local bad
	for bad in '{"key":"k3"}' '{"key":{},"value":3}' '{"key":"k3","value":' 'k3'; do
		run --separate-stderr opt-tree put users <<EOF
{"key":"k1","value":1}
{"key":"k2","value":2}
$bad
{"key":"k4","value":4}
{"key":"k5","value":5}
EOF
		[ "$status" -eq 2 ] || fail "'$bad': exit $status"
		[[ $stderr == *"line 3"*"nothing written"* ]] || fail "'$bad': $stderr"
		[ -z "$output" ] || fail "'$bad': $output"
		[ "$(revs users)" -eq 1 ] || fail "'$bad': a new revision"
		run -1 opt-tree get users k1
		run -1 opt-tree get users k2
		run opt-tree count users
		assert_output 3
	done
	# the same into a new tree: it is not created
	run opt-tree put fresh <<'EOF'
{"key":"k1","value":1}
{"key":"k2","value":2}
{"key":"k3"}
EOF
	assert_failure 2
	run -1 opt-tree count fresh
	run opt-tree ls
	assert_output '{"collection":"users","count":3,"rev":1}'
	fsck_ok
}

@test "invalid tree names are usage errors" {
	local name v
	for name in '../evil' 'a..b' 'x.lock' '' 'a b' '/abs' 'a//b'; do
		for v in get range count stat del; do
			case $v in get | del) run --separate-stderr opt-tree "$v" "$name" k ;;
			*) run --separate-stderr opt-tree "$v" "$name" ;;
			esac
			[ "$status" -eq 2 ] || fail "$v '$name': exit $status"
			[[ $stderr == *"invalid collection name"* || $stderr == *"name is required"* ]] ||
				fail "$v '$name': $stderr"
		done
		run opt-tree put "$name" k 1
		[ "$status" -eq 2 ] || fail "put '$name': exit $status"
	done
	run --separate-stderr opt-tree get
	assert_failure 2
	[[ $stderr == *"the tree's name is required"* ]]
	run --separate-stderr opt-tree put </dev/null
	assert_failure 2
	[[ $stderr == *"the tree's name is required"* ]]
	run opt-block ls
	assert_output ''
}

@test "a diary or a block collection is not a tree (exit 2); an unknown tree is not found (exit 1)" {
	opt-diary append journal '{"e":1}' >/dev/null
	echo '{"a":1}' | opt-block put -c blocks >/dev/null
	local v
	for v in get del range count stat; do
		case $v in get | del) run --separate-stderr opt-tree "$v" journal k ;;
		*) run --separate-stderr opt-tree "$v" journal ;;
		esac
		[ "$status" -eq 2 ] || fail "$v journal: exit $status"
		assert_equal "$stderr" "opt-tree: collection 'journal' is a diary collection, not a tree collection"
		case $v in get | del) run --separate-stderr opt-tree "$v" blocks k ;;
		*) run --separate-stderr opt-tree "$v" blocks ;;
		esac
		[ "$status" -eq 2 ] || fail "$v blocks: exit $status"
		assert_equal "$stderr" "opt-tree: collection 'blocks' is a block collection, not a tree collection"
		case $v in get | del) run --separate-stderr opt-tree "$v" nosuch k ;;
		*) run --separate-stderr opt-tree "$v" nosuch ;;
		esac
		[ "$status" -eq 1 ] || fail "$v nosuch: exit $status"
		assert_equal "$stderr" "opt-tree: no collection 'nosuch'"
	done
	# writing into them is refused too, and changes nothing
	run --separate-stderr opt-tree put journal k 1
	assert_failure 2
	[[ $stderr == *"is a diary collection, not a tree collection"* ]]
	run opt-tree put blocks <<<'{"key":"k","value":1}'
	assert_failure 2
	[ "$(revs journal)" -eq 1 ]
	[ "$(revs blocks)" -eq 1 ]
	# del of an unknown tree does not create it
	run opt-tree ls
	assert_output ''
	fsck_ok
}

# --- randomized ---

# The expected range of the model: one {"key","value"} line per key, in
# key order (jq orders numbers < strings < arrays like opt-tree).
model_range() {
	local i
	for i in "${!model[@]}"; do
		printf '{"key":%s,"value":%s}\n' "${keys[i]}" "${model[i]}"
	done | jq -sc 'sort_by(.key)[]'
}

@test "randomized: 2,000 puts and dels agree with a model; forward == reverse reversed" {
	local seed=${OPT_TEST_SEED:-$((($(date +%s) * 7 + $$) % 100000))}
	echo "# randomized tree test: seed $seed (re-run with OPT_TEST_SEED=$seed)" >&3
	RANDOM=$seed
	local -a keys=() model=()
	local i k n op done=0 rev=0 deleted absent want
	local -a gone
	# 60 keys of all three kinds
	for i in $(seq 0 19); do
		keys+=("$i" "\"k$i\"" "[$((i % 4)),\"x$i\"]")
	done
	while [ "$done" -lt 2000 ]; do
		n=$((20 + RANDOM % 230))
		[ $((done + n)) -le 2000 ] || n=$((2000 - done))
		: >"$TMP/batch"
		if [ $((RANDOM % 10)) -lt 6 ]; then
			for ((op = 0; op < n; op++)); do
				i=$((RANDOM % ${#keys[@]}))
				model[i]="{\"op\":$((done + op)),\"r\":$RANDOM}"
				printf '{"key":%s,"value":%s}\n' "${keys[i]}" "${model[i]}" >>"$TMP/batch"
			done
			rev=$((rev + 1))
			run opt-tree put rnd --capacity 4 <"$TMP/batch"
			[ "$status" -eq 0 ] || fail "seed $seed: put: exit $status: $output"
			assert_equal "$output" "{\"collection\":\"rnd\",\"rev\":$rev,\"put\":$n}"
		else
			deleted=0 absent=0 gone=()
			for ((op = 0; op < n; op++)); do
				i=$((RANDOM % ${#keys[@]}))
				if [ -n "${model[i]+set}" ]; then
					unset 'model[i]'
					gone[i]=1
					deleted=$((deleted + 1))
				elif [ -n "${gone[i]+set}" ]; then
					# given twice: reported deleted again
					deleted=$((deleted + 1))
				else
					absent=$((absent + 1))
				fi
				printf '%s\n' "${keys[i]}" >>"$TMP/batch"
			done
			[ "$deleted" -eq 0 ] || rev=$((rev + 1))
			run --separate-stderr opt-tree del rnd --json-keys - <"$TMP/batch"
			want=0
			[ "$absent" -eq 0 ] || want=1
			[ "$rev" -gt 0 ] || want=1 # no tree yet: not found
			[ "$status" -eq "$want" ] || fail "seed $seed: del: exit $status, not $want: $stderr"
			if [ "$rev" -gt 0 ]; then
				# a record per key that was there
				assert_equal "$(grep -c . <<<"$output")" "$deleted"
				[ "$deleted" -eq 0 ] || assert_equal "$(jq -s -c 'map(.rev) | unique' <<<"$output")" "[$rev]"
			fi
		fi
		done=$((done + n))
		[ "$rev" -eq 0 ] || model_range >"$TMP/want.$rev"
	done
	[ "$rev" -gt 0 ]
	assert_equal "$(revs rnd)" "$rev"
	model_range >"$TMP/want"
	opt-tree range rnd >"$TMP/got"
	diff "$TMP/want" "$TMP/got" || fail "seed $seed: range differs from the model"
	opt-tree range rnd --reverse | tac >"$TMP/rev"
	diff "$TMP/got" "$TMP/rev" || fail "seed $seed: reverse is not forward reversed"
	run opt-tree count rnd
	assert_output "${#model[@]}"
	# every key of the model reads back with get; every revision with --rev
	if [ "${#model[@]}" -gt 0 ]; then
		run bash -c "jq -c .key '$TMP/want' | opt-tree get rnd --json-keys -"
		assert_success
		assert_equal "$output" "$(cat "$TMP/want")"
	fi
	for ((i = 1; i <= rev; i++)); do
		opt-tree range rnd --rev "$i" >"$TMP/got"
		diff "$TMP/want.$i" "$TMP/got" || fail "seed $seed: range --rev $i differs from the model"
	done
	fsck_ok
}
