#!/usr/bin/env bats
# opt-block: init, put, get, ls, apply, transform, rm, history, stat

load test_helper

@test "init creates a store that git fsck accepts; init again is harmless" {
	run opt-block init "$TMP/s2"
	assert_success
	assert_output --partial '"created":true'
	run opt-block init "$TMP/s2"
	assert_success
	assert_output --partial '"created":false'
	fsck_ok "$TMP/s2"
}

@test "put writes blocks in one transaction and get reads them back" {
	run opt-block put -c users <<'EOF2'
{"header":{"id":"aaaaaaaaaaaaaaaaaaaaaaaaaa","type":"user"},"name":"alice"}
{"header":{"id":"bbbbbbbbbbbbbbbbbbbbbbbbbb","type":"user"},"name":"bob"}
EOF2
	assert_success
	assert_line '{"id":"aaaaaaaaaaaaaaaaaaaaaaaaaa","collection":"users","rev":1}'
	assert_line '{"id":"bbbbbbbbbbbbbbbbbbbbbbbbbb","collection":"users","rev":1}'
	run opt-block get -c users aaaaaaaaaaaaaaaaaaaaaaaaaa
	assert_success
	assert_output '{"header":{"collection":"users","id":"aaaaaaaaaaaaaaaaaaaaaaaaaa","type":"user"},"name":"alice"}'
	# without -c every collection is searched
	run opt-block get bbbbbbbbbbbbbbbbbbbbbbbbbb
	assert_success
	assert_output --partial '"name":"bob"'
	run git --git-dir="$OPT_STORE" log --oneline refs/opt/collections/users
	assert_success
	assert_equal "${#lines[@]}" 1
	fsck_ok
}

@test "put fills a missing id, collection and type" {
	run opt-block put -c things <<<'{"size":3}'
	assert_success
	id=$(echo "$output" | sed 's/.*"id":"\([a-z2-7]*\)".*/\1/')
	run opt-block get -c things "$id"
	assert_success
	assert_output --partial '"type":"block"'
	assert_output --partial '"collection":"things"'
}

@test "every write is a new revision; --rev reads older ones" {
	echo '{"header":{"id":"cccccccccccccccccccccccccc","type":"t"},"v":1}' | opt-block put -c c >/dev/null
	echo '{"header":{"id":"cccccccccccccccccccccccccc","type":"t"},"v":2}' | opt-block put -c c >/dev/null
	echo '["v",0,0,3]' | opt-block apply -c c cccccccccccccccccccccccccc >/dev/null
	run opt-block get -c c cccccccccccccccccccccccccc
	assert_output --partial '"v":3'
	run opt-block get -c c --rev 1 cccccccccccccccccccccccccc
	assert_output --partial '"v":1'
	run opt-block get -c c cccccccccccccccccccccccccc --rev 2
	assert_output --partial '"v":2'
	run -1 opt-block get -c c --rev 9 cccccccccccccccccccccccccc
	assert_output --partial 'no revision 9'
	run git --git-dir="$OPT_STORE" rev-list --count refs/opt/collections/c
	assert_output 3
}

@test "history lists the revisions that changed a block, oldest first" {
	echo '{"header":{"id":"dddddddddddddddddddddddddd","type":"t"},"v":1}' | opt-block put -c h >/dev/null
	echo '{"header":{"id":"eeeeeeeeeeeeeeeeeeeeeeeeee","type":"t"},"v":1}' | opt-block put -c h >/dev/null
	echo '[["v",0,0,2]]' | opt-block apply -c h dddddddddddddddddddddddddd >/dev/null
	opt-block rm -c h dddddddddddddddddddddddddd >/dev/null
	run opt-block history -c h dddddddddddddddddddddddddd
	assert_success
	assert_equal "${#lines[@]}" 3
	assert_line --index 0 --regexp '^\{"rev":1,"trx":"[a-z2-7]{26}","hash":"[0-9a-f]{64}"\}$'
	assert_line --index 1 --regexp '^\{"rev":3,'
	assert_line --index 2 --regexp '^\{"rev":4,.*"hash":null,"deleted":true\}$'
	run -1 opt-block history -c h zzzzzzzzzzzzzzzzzzzzzzzzzz
}

@test "ls lists blocks, filters by type, reads old revisions" {
	printf '%s\n' '{"header":{"id":"ffffffffffffffffffffffffff","type":"a"}}' \
		'{"header":{"id":"gggggggggggggggggggggggggg","type":"b"}}' | opt-block put -c l >/dev/null
	opt-block rm -c l gggggggggggggggggggggggggg >/dev/null
	run opt-block ls -c l --type a
	assert_success
	assert_output '{"id":"ffffffffffffffffffffffffff","type":"a","collection":"l"}'
	run opt-block ls -c l --rev 1 --type b
	assert_output '{"id":"gggggggggggggggggggggggggg","type":"b","collection":"l"}'
	run opt-block ls -c l --type b
	assert_output ''
}

@test "transform applies inserts, updates and deletes as one transaction" {
	echo '{"header":{"id":"hhhhhhhhhhhhhhhhhhhhhhhhhh","type":"t"},"list":[1,2,3]}' | opt-block put -c t >/dev/null
	run opt-block transform -c t <<'EOF2'
{"inserts":{"iiiiiiiiiiiiiiiiiiiiiiiiii":{"header":{"id":"iiiiiiiiiiiiiiiiiiiiiiiiii","type":"t"}}},"updates":{"hhhhhhhhhhhhhhhhhhhhhhhhhh":[["list",1,1,["x","y"]]]}}
EOF2
	assert_success
	assert_line '{"id":"iiiiiiiiiiiiiiiiiiiiiiiiii","collection":"t","rev":2}'
	run opt-block get -c t hhhhhhhhhhhhhhhhhhhhhhhhhh
	assert_output --partial '"list":[1,"x","y",3]'
	run opt-block transform -c t <<<'{"deletes":["iiiiiiiiiiiiiiiiiiiiiiiiii"]}'
	assert_success
	assert_output '{"id":"iiiiiiiiiiiiiiiiiiiiiiiiii","collection":"t","rev":3,"deleted":true}'
}

@test "stat tells collections, blocks, objects and bytes" {
	printf '%s\n' '{"x":1}' '{"x":2}' | opt-block put -c s1 >/dev/null
	echo '{"x":3}' | opt-block put -c s2 >/dev/null
	run opt-block stat
	assert_success
	assert_output --regexp '"blocks":[0-9]+'
	assert_output --partial '"collection":"s1"'
	assert_output --partial '"packs":'
	run opt-block stat -c s1
	assert_output --regexp '"rev":1'
	assert_output --partial '"type":"block"'
}

@test "get and ls read from stdin and write JSON Lines; --pretty indents" {
	printf '%s\n' '{"header":{"id":"jjjjjjjjjjjjjjjjjjjjjjjjjj","type":"t"}}' \
		'{"header":{"id":"kkkkkkkkkkkkkkkkkkkkkkkkkk","type":"t"}}' | opt-block put -c g >/dev/null
	run opt-block get -c g - <<<$'"jjjjjjjjjjjjjjjjjjjjjjjjjj"\nkkkkkkkkkkkkkkkkkkkkkkkkkk'
	assert_success
	assert_equal "${#lines[@]}" 2
	run opt-block get -c g --pretty jjjjjjjjjjjjjjjjjjjjjjjjjj
	assert_line '  "header": {'
}

@test "a writing command with no store creates ./.opt and says so" {
	unset OPT_STORE
	mkdir "$TMP/fresh" && cd "$TMP/fresh"
	run --separate-stderr opt-block put -c x <<<'{"a":1}'
	assert_success
	[[ "$stderr" == *"created store '.opt'"* ]]
	[ -d "$TMP/fresh/.opt" ]
	mkdir sub && cd sub
	run opt-block ls -c x
	assert_success
	assert_output --partial '"collection":"x"'
}

@test "a reading command with no store fails clearly" {
	unset OPT_STORE
	mkdir "$TMP/none" && cd "$TMP/none"
	run -7 opt-block ls --store "$TMP/none/nothing-here"
	run --separate-stderr opt-block ls
	[ "$status" -ne 0 ]
	[[ "$stderr" == "opt-block: no store found"* ]]
}
