#!/usr/bin/env bats
# Documentation, completions and install: the man pages agree with the
# programs, their examples run, the shell completions complete, and
# `make install` / `make uninstall` do what they say.
#
# What a man page must do for these tests (man/PROG.1, mdoc or man):
#  - SYNOPSIS: one line per command, exactly the usage line that
#    `PROG COMMAND --help` prints (its first lines up to the empty one,
#    joined: --help wraps at 80 columns; without "usage: ").
#  - Every option of every command (`PROG --complete COMMAND`, and the short
#    forms in `PROG COMMAND --help`) appears somewhere in the page.
#  - EXAMPLES: inside literal displays (.Bd -literal/.Ed, .EX/.EE, .nf/.fi)
#    a line "$ CMD" is a command, a line "> MORE" continues it (a here
#    document, say), and the lines after it, up to the next command or the
#    end of the display, are exactly what it prints on stdout and stderr,
#    where "..." stands for any text (a generated ID, a hash, a time).  The
#    commands run in order, in one shell (set -o pipefail), in an empty
#    directory with no OPT_STORE; each must exit 0 (show a failure with
#    "; echo $?").  Roff escapes \(aq \(dq \e \- \& are undone first.
# Lint: `mandoc -T lint` with no WARNING or worse; cross-references to opt*
# pages must name a page in man/ or one of the programs still being written.

load test_helper

# Pages referenced before they exist: the programs still being written.
PENDING_PAGES="opt-tree opt-diary opt-log opt-sync"

# The built programs that have a man page, one a line.
progs_with_pages() {
	local p n
	for p in "$OPT_BIN"/opt-*; do
		n=${p##*/}
		[ -x "$p" ] && [ -f "$TOP/man/$n.1" ] && echo "$n"
	done
	return 0
}

all_progs() {
	local p
	for p in "$OPT_BIN"/opt-*; do
		[ -x "$p" ] && echo "${p##*/}"
	done
	return 0
}

need_mandoc() {
	command -v mandoc >/dev/null || fail "mandoc is not installed (apt-get install mandoc; see tools/deps.sh)"
}

# The page rendered as plain text, wide enough that no line wraps.
render() {
	mandoc -T ascii -O width=500 "$1" 2>/dev/null | sed 's/.\x08//g'
}

# Section $2 of rendered page $1.
rendered_section() {
	render "$1" | awk -v s="$2" '$0 == s { f = 1; next } /^[A-Z][A-Z ]*[A-Z]$/ { f = 0 } f'
}

# The SYNOPSIS lines of page $1 for program $2, white space squeezed.
synopsis_lines() {
	rendered_section "$1" SYNOPSIS | sed 's/^ *//; s/  */ /g; s/ *$//' | grep -- "^$2 " || true
}

# The commands of program $1 as --help lists them (a line each, at column
# 2; wrapped text goes on further right).
help_verbs() {
	"$1" --help | awk '/^commands:/ { f = 1; next } f && /^$/ { exit } f && /^  [^ ]/ { print $1 }'
}

# The commands of program $1 as --complete lists them.
complete_verbs() {
	"$1" --complete | grep -v -- '^-' || true
}

@test "opt-block and the overview pages have man pages" {
	# the other programs are checked once they have a page (progs_with_pages)
	[ -x "$OPT_BIN/opt-block" ] || fail "no $OPT_BIN/opt-block"
	[ -f "$TOP/man/opt-block.1" ] || fail "man/opt-block.1 is missing"
	[ -f "$TOP/man/opt.7" ] || fail "man/opt.7 is missing"
	[ -f "$TOP/man/opt-json.7" ] || fail "man/opt-json.7 is missing"
	progs_with_pages | grep -qx opt-block
}

@test "man pages pass mandoc -T lint, and their cross-references exist" {
	need_mandoc
	local f out name sec
	for f in "$TOP"/man/*.[1-8]; do
		out=$(mandoc -T lint -W warning "$f" 2>&1 |
			grep -v -e 'referenced manual not found' -e 'mandoc\.db' || true)
		[ -z "$out" ] || fail "mandoc -T lint ${f#"$TOP"/}:
$out"
		while read -r _ name sec _; do
			case $name in opt*) ;; *) continue ;; esac
			name=${name%,}
			sec=${sec%,}
			[ -f "$TOP/man/$name.$sec" ] && continue
			case " $PENDING_PAGES " in *" $name "*) [ "$sec" = 1 ] && continue ;; esac
			fail "${f#"$TOP"/} refers to $name($sec), which is not in man/"
		done < <(grep '^\.Xr ' "$f")
	done
}

@test "SYNOPSIS lists exactly the commands and usage lines of --help" {
	need_mandoc
	local n page hv cv v usage want have
	[ -n "$(progs_with_pages)" ] || fail "no built program has a man page"
	for n in $(progs_with_pages); do
		page="$TOP/man/$n.1"
		hv=$(help_verbs "$n")
		cv=$(complete_verbs "$n")
		[ -n "$hv" ] || fail "$n --help lists no commands"
		[ "$hv" = "$cv" ] || fail "$n: --help lists '${hv//$'\n'/ }', --complete '${cv//$'\n'/ }'"
		want=
		for v in $hv; do
			usage=$("$n" "$v" --help | sed '/^$/q' | tr '\n' ' ' | sed 's/  */ /g; s/ *$//')
			[[ $usage == "usage: $n $v"* ]] || fail "$n $v --help: first line is '$usage'"
			want+="${usage#usage: }"$'\n'
		done
		want=$(printf '%s' "$want" | sed 's/  */ /g; s/ *$//' | sort)
		have=$(synopsis_lines "$page" "$n" | sort)
		[ "$want" = "$have" ] || fail "$n: SYNOPSIS of man/$n.1 differs from the usage lines:
$(diff <(echo "$want") <(echo "$have"))"
		# the order of the commands is the order of --help
		[ "$(synopsis_lines "$page" "$n" | awk '{ print $2 }')" = "$hv" ] ||
			fail "$n: SYNOPSIS lists the commands in another order than --help"
	done
}

@test "every option of every command is documented in the man page" {
	need_mandoc
	local n text v o s missing
	for n in $(progs_with_pages); do
		text=$(render "$TOP/man/$n.1")
		missing=
		for v in $(complete_verbs "$n"); do
			for o in $("$n" --complete "$v"); do
				o=${o%=}
				grep -qE -- "(^|[^A-Za-z0-9-])$o([^A-Za-z0-9-]|\$)" <<<"$text" ||
					missing="$missing $v:$o"
			done
			for s in $("$n" "$v" --help | sed -n 's/^  *\(-[A-Za-z0-9]\), --.*/\1/p'); do
				grep -qE -- "(^|[^A-Za-z0-9-])$s([^A-Za-z0-9-]|\$)" <<<"$text" ||
					missing="$missing $v:$s"
			done
		done
		[ -z "$missing" ] || fail "$n: options not in man/$n.1:$missing"
		# the sections every page has
		for s in NAME SYNOPSIS DESCRIPTION OPTIONS "INPUT AND OUTPUT" ENVIRONMENT \
			"EXIT STATUS" EXAMPLES "SEE ALSO"; do
			grep -qx -- "$s" <<<"$text" || fail "man/$n.1 has no section $s"
		done
		for s in 0 1 2 3 4 5 6 7; do
			rendered_section "$TOP/man/$n.1" "EXIT STATUS" | grep -qE "^ +$s " ||
				fail "man/$n.1: EXIT STATUS does not list $s"
		done
		for s in OPT_STORE OPT_BUSY_TIMEOUT OPT_FSYNC; do
			rendered_section "$TOP/man/$n.1" ENVIRONMENT | grep -q -- "$s" ||
				fail "man/$n.1: ENVIRONMENT does not describe $s"
		done
	done
}

@test "--help and COMMAND --help print to stdout and exit 0" {
	local n v
	for n in $(all_progs); do
		run --separate-stderr "$n" --help
		[ "$status" -eq 0 ] || fail "$n --help: exit $status"
		[ -z "$stderr" ] || fail "$n --help wrote to stderr: $stderr"
		[[ $output == "usage: $n "* ]] || fail "$n --help: $output"
		run --separate-stderr "$n" -h
		[ "$status" -eq 0 ] || fail "$n -h: exit $status"
		for v in $(complete_verbs "$n"); do
			run --separate-stderr "$n" "$v" --help
			[ "$status" -eq 0 ] || fail "$n $v --help: exit $status"
			[ -z "$stderr" ] || fail "$n $v --help wrote to stderr: $stderr"
			[[ $output == "usage: $n $v"* ]] || fail "$n $v --help: $output"
		done
	done
}

@test "--version prints the program's name and version" {
	local n
	for n in $(all_progs); do
		run --separate-stderr "$n" --version
		[ "$status" -eq 0 ] || fail "$n --version: exit $status"
		[[ $output =~ ^$n\ [0-9]+\.[0-9]+\.[0-9]+(\ \([0-9a-f]+(-dirty)?\))?$ ]] || fail "$n --version: '$output'"
		[ -z "$stderr" ] || fail "$n --version wrote to stderr: $stderr"
	done
}

@test "an unknown option or command exits 2 with one line on stderr that says where the usage is" {
	local n v
	for n in $(all_progs); do
		run --separate-stderr "$n" --no-such-option
		[ "$status" -eq 2 ] || fail "$n --no-such-option: exit $status"
		[ -z "$output" ] || fail "$n --no-such-option wrote to stdout: $output"
		[ "$stderr" = "$n: unknown option '--no-such-option'; try '$n --help'" ] || fail "$n --no-such-option: $stderr"
		run --separate-stderr "$n" no-such-command
		[ "$status" -eq 2 ] || fail "$n no-such-command: exit $status"
		[ "$stderr" = "$n: unknown command 'no-such-command'; try '$n --help'" ] || fail "$n no-such-command: $stderr"
		run --separate-stderr "$n"
		[ "$status" -eq 2 ] || fail "$n with no command: exit $status"
		[ "$stderr" = "$n: no command given; try '$n --help'" ] || fail "$n with no command: $stderr"
		for v in $(complete_verbs "$n"); do
			run --separate-stderr "$n" "$v" --no-such-option
			[ "$status" -eq 2 ] || fail "$n $v --no-such-option: exit $status"
			[ "$stderr" = "$n: unknown option '--no-such-option'; try '$n $v --help'" ] || fail "$n $v --no-such-option: $stderr"
		done
	done
}

# The literal display lines of the EXAMPLES section of page $1, roff
# escapes undone.
example_lines() {
	awk '
	/^\.(Sh|SH)[ \t]/ { sub(/^\.(Sh|SH)[ \t]+/, ""); gsub(/"/, ""); ex = ($0 == "EXAMPLES"); disp = 0; next }
	!ex { next }
	/^\.(Bd|EX|nf)([ \t]|$)/ { disp = (($0 !~ /^\.Bd/) || ($0 ~ /-literal|-unfilled/)); next }
	/^\.(Ed|EE|fi)([ \t]|$)/ { disp = 0; print "\001"; next }
	disp && /^\./ { next }
	disp { print }
	' "$1" | sed -e 's/\\(aq/'"'"'/g' -e 's/\\(dq/"/g' -e 's/\\(ga/`/g' -e 's/\\(ti/~/g' \
		-e 's/\\(ha/^/g' -e 's/\\-/-/g' -e 's/\\&//g' -e 's/\\e/\\/g'
}

# Does actual text $1 match expected text $2 ("..." is any text)?
# Prints the first differing line on failure.
matches() {
	local -a act exp
	local i p
	mapfile -t act <<<"$1"
	mapfile -t exp <<<"$2"
	[ -z "$1" ] && act=()
	[ -z "$2" ] && exp=()
	if [ "${#act[@]}" -ne "${#exp[@]}" ]; then
		echo "expected ${#exp[@]} lines, got ${#act[@]}"
		return 1
	fi
	for ((i = 0; i < ${#exp[@]}; i++)); do
		p=${exp[i]//\\/\\\\}
		p=${p//\*/\\*}
		p=${p//\?/\\?}
		p=${p//\[/\\[}
		p=${p//.../*}
		# shellcheck disable=SC2053
		if [[ ${act[i]} != $p ]]; then
			echo "line $((i + 1)): expected: ${exp[i]}"
			echo "line $((i + 1)):      got: ${act[i]}"
			return 1
		fi
	done
}

# Strip trailing empty lines.
trim() {
	printf '%s\n' "$1" | sed -e ':a' -e '/^\n*$/{$d;N;ba' -e '}'
}

# Run the examples of page $1 in a fresh directory; fail on the first that
# does not exit 0 or prints something else than shown.
run_examples() {
	local page=$1 dir="$TMP/examples" out="$TMP/ex-out" script="$TMP/ex.sh"
	local where=${1#"$TOP"/}
	local -a cmds=() exps=() closed=()
	local line n=-1 i got rc why
	rm -rf "$dir" "$out"
	mkdir -p "$dir" "$out"
	while IFS= read -r line; do
		if [[ $line == $'\001' ]]; then
			# the end of a display: what follows is no command's output
			[ "$n" -lt 0 ] || closed[n]=1
			continue
		fi
		if [[ $line == '$ '* ]]; then
			n=$((n + 1))
			cmds[n]=${line#'$ '}
			exps[n]=
			closed[n]=
		elif [[ $line == '> '* && $n -ge 0 && -z ${exps[n]} && -z ${closed[n]} ]]; then
			cmds[n]+=$'\n'"${line#'> '}"
		elif [ "$n" -ge 0 ] && [ -z "${closed[n]}" ]; then
			exps[n]+="$line"$'\n'
		fi
	done < <(example_lines "$page")
	if [ "${#cmds[@]}" -eq 0 ]; then
		fail "$where: EXAMPLES has no runnable example ('\$ command' lines in a literal display)"
		return 1
	fi
	{
		echo 'set -o pipefail'
		echo "cd '$dir' || exit 99"
		for ((i = 0; i < ${#cmds[@]}; i++)); do
			printf '{\n%s\n} >%s/%d 2>&1 </dev/null\necho $? >%s/%d.rc\n' "${cmds[i]}" "$out" "$i" "$out" "$i"
		done
	} >"$script"
	(unset OPT_STORE; cd "$dir" && timeout 300 bash "$script") >/dev/null 2>&1
	for ((i = 0; i < ${#cmds[@]}; i++)); do
		if [ ! -f "$out/$i.rc" ]; then
			fail "$where: example not run: \$ ${cmds[i]}"
			return 1
		fi
		got=$(cat "$out/$i")
		rc=$(cat "$out/$i.rc")
		if [ "$rc" != 0 ]; then
			fail "$where: example exits $rc:"$'\n'"\$ ${cmds[i]}"$'\n'"$got"
			return 1
		fi
		if ! why=$(matches "$(trim "$got")" "$(trim "${exps[i]}")"); then
			fail "$where: example output differs ($why):"$'\n'"\$ ${cmds[i]}"$'\n'"$got"
			return 1
		fi
	done
}

@test "the EXAMPLES of the program pages run and print what they show" {
	local n
	[ -n "$(progs_with_pages)" ] || fail "no built program has a man page"
	for n in $(progs_with_pages); do
		run_examples "$TOP/man/$n.1"
	done
}

@test "the EXAMPLES of opt.7 run and print what they show" {
	run_examples "$TOP/man/opt.7"
}

@test "the example checker catches a wrong example" {
	cat >"$TMP/bad.1" <<'EOF'
.Sh EXAMPLES
.Bd -literal
$ echo one; echo two
one
three
.Ed
EOF
	run run_examples "$TMP/bad.1"
	assert_failure
	assert_output --partial 'expected: three'
	cat >"$TMP/fails.1" <<'EOF'
.Sh EXAMPLES
.Bd -literal
$ false
.Ed
EOF
	run run_examples "$TMP/fails.1"
	assert_failure
	assert_output --partial 'example exits 1'
	cat >"$TMP/good.1" <<'EOF'
.Sh EXAMPLES
.Bd -literal
$ cat <<EOF
> a \e \(aqb\(aq ...
> EOF
a \e \(aqb\(aq ...
$ echo abc-123-xyz
abc-...-xyz
.Ed
EOF
	run_examples "$TMP/good.1"
}

# --- completions ---

# Complete the words "$@" (the last is the one being completed) with the
# bash completion; prints COMPREPLY one a line.
bash_complete() {
	(
		# shellcheck disable=SC1091
		source "$TOP/completions/opt.bash"
		COMP_WORDS=("$@")
		COMP_CWORD=$(($# - 1))
		COMP_LINE="$*"
		COMP_POINT=${#COMP_LINE}
		_opt_complete
		printf '%s\n' "${COMPREPLY[@]}"
	)
}

@test "bash completion: commands, options, option values, collections" {
	local n v o
	run bash -c "source '$TOP/completions/opt.bash' && complete -p opt-block opt-tree opt-diary opt-log opt-sync"
	assert_success
	assert_line 'complete -F _opt_complete opt-block'
	assert_line 'complete -F _opt_complete opt-sync'
	for n in $(all_progs); do
		run bash_complete "$n" ''
		assert_success
		assert_equal "$output" "$(complete_verbs "$n")"
		for v in $(complete_verbs "$n"); do
			run bash_complete "$n" "$v" -
			assert_success
			for o in $("$n" --complete "$v"); do
				assert_line "$o"
			done
		done
	done
	run bash_complete opt-block g
	assert_output $'get\ngc'
	run bash_complete opt-block --st
	assert_output '--store'
	run bash_complete opt-block put --e
	assert_output '--each'
	run bash_complete opt-block get --coll
	assert_output '--collection='
	# collection names from the store: -c, --collection VALUE, --collection=VALUE
	echo '{"a":1}' | opt-block put -c users >/dev/null
	echo '{"a":1}' | opt-block put -c user/archive >/dev/null
	echo '{"a":1}' | opt-block put -c things >/dev/null
	run bash_complete opt-block get -c ''
	assert_output $'things\nuser/archive\nusers'
	run bash_complete opt-block ls --collection us
	assert_output $'user/archive\nusers'
	run bash_complete opt-block ls --collection = th
	assert_output 'things'
	run bash_complete opt-block ls --collection=th
	assert_output '--collection=things'
	# the store named on the command line wins over $OPT_STORE
	opt-block init "$TMP/other" >/dev/null
	echo '{"a":1}' | opt-block put -C "$TMP/other" -c elsewhere >/dev/null 2>&1
	run bash_complete opt-block -C "$TMP/other" get -c ''
	assert_output 'elsewhere'
	run bash_complete opt-block get --store="$TMP/other" -c ''
	assert_output 'elsewhere'
	# else the nearest .opt upward
	(unset OPT_STORE; mkdir -p "$TMP/up/a/b" && cd "$TMP/up" && echo '{}' | opt-block put -c near -q >/dev/null)
	run env -u OPT_STORE bash -c "cd '$TMP/up/a/b' && source '$TOP/completions/opt.bash' && COMP_WORDS=(opt-block get -c '') COMP_CWORD=3 && _opt_complete && echo \"\${COMPREPLY[*]}\""
	assert_output 'near'
	# a short option's value: -t takes one, so what follows is not a command
	run bash_complete opt-block ls -t ''
	assert_output ''
	# --store completes directories
	mkdir -p "$TMP/dirs/store-a" "$TMP/dirs/store-b"
	run bash_complete opt-block -C "$TMP/dirs/st"
	assert_output "$TMP/dirs/store-a"$'\n'"$TMP/dirs/store-b"
	# after the store option, the commands again
	run bash_complete opt-block -C "$TMP/other" ''
	assert_equal "$output" "$(complete_verbs opt-block)"
}

@test "zsh completion: loads with compinit, binds every program, completes" {
	command -v zsh >/dev/null || skip "zsh is not installed"
	local f="$TOP/completions/opt.zsh"
	head -n 1 "$f" | grep -qx '#compdef opt-block opt-tree opt-diary opt-log opt-sync'
	# sourced after compinit
	run zsh -f -c "autoload -U compinit && compinit -u -d '$TMP/zcd1' && source '$f' && print -r -- \$_comps[opt-block] \$_comps[opt-tree] \$_comps[opt-sync]"
	assert_success
	assert_output '_opt _opt _opt'
	# installed in $fpath as _opt-block: compinit reads the #compdef line
	mkdir -p "$TMP/zfp"
	cp "$f" "$TMP/zfp/_opt-block"
	run zsh -f -c "fpath=('$TMP/zfp' \$fpath) && autoload -U compinit && compinit -u -d '$TMP/zcd2' && print -r -- \$_comps[opt-block] \$_comps[opt-diary]"
	assert_success
	assert_output '_opt-block _opt-block'
	# what it offers
	echo '{"a":1}' | opt-block put -c users >/dev/null
	cat >"$TMP/zt.zsh" <<EOF
source '$f'
t() { words=("\$@"); CURRENT=\$#; _opt_analyse; print -r -- "\$_opt_kind:\$_opt_pre:\${(j: :)_opt_cands}"; }
t opt-block ''
t opt-block get -
t opt-block get -c ''
t opt-block get --collection=u
t opt-block -C /tmp ''
t opt-block ls -t ''
t opt-block -C ''
t opt-block get abc ''
EOF
	run zsh -f "$TMP/zt.zsh"
	assert_success
	assert_line --index 0 "verbs::$(complete_verbs opt-block | tr '\n' ' ' | sed 's/ $//')"
	assert_line --index 1 "options::$(opt-block --complete get | tr '\n' ' ' | sed 's/ $//')"
	assert_line --index 2 'collection::users'
	assert_line --index 3 'collection:--collection=:users'
	assert_line --index 4 "verbs::$(complete_verbs opt-block | tr '\n' ' ' | sed 's/ $//')"
	assert_line --index 5 'none::'
	assert_line --index 6 'store::'
	assert_line --index 7 'operand::'
}

@test "fish completion: loads and completes commands, options, collections" {
	command -v fish >/dev/null || skip "fish is not installed"
	local n v f o
	for n in $(all_progs); do
		f="$TMP/$n.fish"
		sed "s/@PROG@/$n/g" "$TOP/completions/opt.fish" >"$f"
		run fish --no-config -c "source '$f'"
		assert_success
		assert_output ''
		run fish --no-config -c "source '$f'; complete -C '$n '"
		assert_success
		assert_equal "$(cut -f1 <<<"$output" | sort)" "$(complete_verbs "$n" | sort)"
		for v in $(complete_verbs "$n"); do
			run fish --no-config -c "source '$f'; complete -C '$n $v -'"
			assert_success
			for o in $("$n" --complete "$v"); do
				cut -f1 <<<"$output" | grep -qx -- "$o" || fail "fish: '$n $v -' does not offer $o: $output"
			done
		done
	done
	f="$TMP/opt-block.fish"
	echo '{"a":1}' | opt-block put -c users >/dev/null
	run fish --no-config -c "source '$f'; complete -C 'opt-block get -c '"
	assert_output 'users'
	run fish --no-config -c "source '$f'; complete -C 'opt-block get --collection=u'"
	assert_output '--collection=users'
	run fish --no-config -c "source '$f'; complete -C 'opt-block g'"
	assert_equal "$(cut -f1 <<<"$output" | sort)" $'gc\nget'
}

# --- install ---

@test "make install puts programs, pages and completions in place; uninstall removes them" {
	local inst="$TMP/inst" p n f
	run make -s -C "$TOP" install PREFIX="$inst"
	assert_success
	for p in "$TOP"/cmd/opt-*.c; do
		n=$(basename "$p" .c)
		[ -x "$inst/bin/$n" ] || fail "not installed: bin/$n"
		run "$inst/bin/$n" --version
		assert_success
		if [ -f "$TOP/man/$n.1" ]; then
			[ -f "$inst/share/man/man1/$n.1" ] || fail "not installed: man1/$n.1"
		fi
		cmp "$TOP/completions/opt.bash" "$inst/share/bash-completion/completions/$n" ||
			fail "bash completion for $n not installed"
		cmp "$TOP/completions/opt.zsh" "$inst/share/zsh/site-functions/_$n" ||
			fail "zsh completion for $n not installed"
		f="$inst/share/fish/vendor_completions.d/$n.fish"
		[ -f "$f" ] || fail "fish completion for $n not installed"
		! grep -q '@PROG@' "$f" || fail "$f still holds @PROG@"
		grep -q -- "complete -c $n " "$f" || fail "$f does not complete $n"
	done
	for p in "$TOP"/man/*.7; do
		[ -f "$inst/share/man/man7/${p##*/}" ] || fail "not installed: man7/${p##*/}"
	done
	# the installed page is found by man
	if command -v man >/dev/null; then
		run env MANPATH="$inst/share/man" man -w opt-block
		assert_success
		assert_output "$inst/share/man/man1/opt-block.1"
	fi
	run make -s -C "$TOP" uninstall PREFIX="$inst"
	assert_success
	run find "$inst" -type f
	assert_output ''
}

@test "tools/demo.sh runs, printing each command and its output" {
	run sh "$TOP/tools/demo.sh" "$OPT_BIN"
	assert_success
	assert_line --regexp '^\$ .*\| opt-block put '
	assert_line --regexp '^\$ opt-block history '
	assert_line --regexp '^\$ opt-block stat'
	assert_output --partial '"rev":'
}
