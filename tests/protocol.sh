#!/bin/sh
# tests/protocol.sh - model-check docs/protocol.pml with spin, and show that
# the checks can fail.  Prints TAP ("ok N - ..." / "not ok N - ...") with
# comment lines giving the states explored; exits 0 only if every check
# passed.  Needs spin and gcc (apt-get install spin gcc).
#
#  - safety, exhaustive (spin -a; gcc -O2 -DSAFETY; ./pan), one run per
#    configuration: no assertion violated, no invalid end state, search
#    complete;
#  - progress, the LTL property <> ALL_RESOLVED under weak fairness
#    (gcc -O2 without -DSAFETY; ./pan -a -f), one run per configuration;
#  - mutants: copies of the model with one line changed by sed, and the
#    reader as docs/protocol.md describes it; each must make spin report
#    the violation it should.
#
# Runs the checks two at a time (PROTOCOL_JOBS to change): about 20 s of
# CPU, 10 s on two idle cores.  PROTOCOL_KEEP=1 keeps the runs (and so
# spin's trails: spin -DCONF=n -t -p protocol.pml in a run's directory).
set -u

# --- one check, run by xargs: protocol.sh --job NAME TMPDIR ---

# spec NAME: set what (the description), conf, defs (spin -D...), mut
# (a sed script that must change the model, or empty), kind (safety or
# progress), expect (pass, or an extended regexp of pan's report of the
# violation that must be found) and opt (gcc's: -O2 takes 2.5 s to
# compile pan.c, which only pays for the long runs).
spec() {
	conf=1 defs='' mut='' kind=safety expect=pass opt=-O0
	case $1 in
	safety1) what="safety, configuration 1: 2 collections, 2 writers, recoverer, reader" ;;
	safety2) what="safety, configuration 2: 3 collections, 3 overlapping writers, recoverer" conf=2 opt=-O2 ;;
	safety3) what="safety, configuration 3: a 3-collection transaction, reader not reading its primary" conf=3 opt=-O2 ;;
	progress1) what="progress (<> all resolved, weak fairness), configuration 1" kind=progress defs=-DNOREADER ;;
	progress2) what="progress, configuration 2 (recoverer after the writers)" kind=progress conf=2 defs="-DNOREADER -DRECOVER_LATE" ;;
	progress3) what="progress, configuration 3" kind=progress conf=3 defs=-DNOREADER ;;
	mutant1a) what="mutant: the coordinator does not look for an abort record" \
		mut='/MUTANT-1a/s/abr & B(t) ->/false ->/' expect='assertion violated one_decision' ;;
	mutant1b) what="mutant: after a failed decision CAS, retry without re-reading the primary" \
		mut='/MUTANT-1b/s/goto decide/atomic { s = ver[PRIM(t)] }; goto cas/' expect='assertion violated one_decision' ;;
	mutant2) what="mutant: the aborter does not look for the decision on the primary" \
		mut='/MUTANT-2/s/dec & B(u) ->/false ->/' expect='assertion violated one_decision' ;;
	mutant3) what="mutant: the abort record is written without CAS" \
		mut='/MUTANT-3/s/ver\[PRIM(u)\] == ps/true/' expect='assertion violated one_decision' ;;
	mutant4) what="mutant: readers take an undecided pending revision as part of the collection" \
		mut='/MUTANT-4/s/(UNDEC(c) -> TREE(c) \& ~B(hT\[c\]) : TREE(c))/TREE(c)/' expect='assertion violated atomicity' ;;
	mutant5) what="mutant: the reader of two collections does not read the refs again" \
		mut='/\/\* MUTANT-5 \*\//d' expect='assertion violated \(\(\(t0\^t1\)' ;;
	mutant5c3) what="mutant: the same, in configuration 3 (a primary the reader does not read)" conf=3 \
		mut='/\/\* MUTANT-5 \*\//d' expect='assertion violated \(\(\(t0\^t1\)' ;;
	mutant6) what="mutant: a revert that does not revert breaks progress only" kind=progress defs=-DNOREADER \
		mut='/MUTANT-6/s/ver\[x\] == s/false/' expect='acceptance cycle' ;;
	docreader) what="flaw: the reader of docs/protocol.md sees part of a transaction" defs=-DDOC_READER \
		expect='assertion violated \(\(\(t0\^t1\)' ;;
	*) return 1 ;;
	esac
}

job() {
	name=$1 dir=$2/$1
	spec "$name" || exit 2
	mkdir -p "$dir" && cd "$dir" || exit 2
	if [ -n "$mut" ]; then
		sed -e "$mut" "$model" >protocol.pml
		if cmp -s "$model" protocol.pml; then
			echo "the mutation changed nothing: $mut" >diag
			exit 0
		fi
	else
		cp "$model" protocol.pml
	fi
	if [ "$kind" = safety ]; then
		cflags="$opt -DSAFETY -DNOCLAIM -DCOLLAPSE" pflags="-m10000 -w22"
	else
		cflags="$opt -DNFAIR=3 -DCOLLAPSE" pflags="-a -f -m100000 -w22"
	fi
	# shellcheck disable=SC2086
	spin -DCONF="$conf" $defs -a protocol.pml >spin.out 2>&1 || {
		{ echo "spin -a failed:"; cat spin.out; } >diag
		exit 0
	}
	# shellcheck disable=SC2086
	gcc -w $cflags -o pan pan.c >cc.out 2>&1 || {
		{ echo "gcc failed:"; head -n 20 cc.out; } >diag
		exit 0
	}
	# shellcheck disable=SC2086
	./pan $pflags >out 2>&1
	echo $? >rc
}

if [ "${1:-}" = --job ]; then
	model=$(cd "$(dirname "$0")/.." && pwd)/docs/protocol.pml
	job "$2" "$3"
	exit 0
fi

# --- the checks, and their TAP report ---

checks="safety2 safety3 progress2 safety1 progress1 progress3 mutant1a mutant1b mutant2 mutant3 mutant4 mutant5 mutant5c3 mutant6 docreader"
n=0
failed=0
total=0

ok() {
	n=$((n + 1))
	echo "ok $n - $1"
}

not_ok() {
	n=$((n + 1))
	failed=$((failed + 1))
	echo "not ok $n - $1"
	shift
	for l in "$@"; do
		printf '%s\n' "$l" | sed 's/^/#   /'
	done
}

for tool in spin gcc; do
	if ! command -v $tool >/dev/null 2>&1; then
		echo "1..1"
		echo "not ok 1 - $tool is installed (apt-get install $tool)"
		exit 1
	fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/opt-protocol.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

# shellcheck disable=SC2086
set -- $checks
echo "1..$#"
echo "# spin: $(spin -V 2>&1 | head -n 1)"
printf '%s\n' "$@" | xargs -P "${PROTOCOL_JOBS:-2}" -I{} sh "$0" --job {} "$tmp"

# figures NAME: states stored, transitions, depth and time of a run
figures() {
	awk '
	/states, stored/ { s = $1 }
	/transitions \(= / { t = $1 }
	/depth reached/ { d = $0; sub(/.*depth reached /, "", d); sub(/,.*/, "", d) }
	/elapsed time/ { e = $4 }
	END { printf "%s states, %s transitions, depth %s, %s s", s, t, d, e }
	' "$1"
}

for name in $checks; do
	spec "$name"
	dir=$tmp/$name
	if [ -f "$dir/diag" ]; then
		not_ok "$what" "$(cat "$dir/diag")"
		continue
	fi
	if [ ! -f "$dir/out" ]; then
		not_ok "$what" "pan did not run"
		continue
	fi
	out=$dir/out
	if ! grep -q 'states, stored' "$out"; then
		not_ok "$what" "no report from pan:" "$(tail -n 5 "$out")"
		continue
	fi
	limits='max search depth too small|out of memory|too many processes'
	if [ "$expect" = pass ]; then
		if [ "$kind" = progress ]; then
			mode='acceptance +cycles.*\+ \(fairness enabled\)'
		else
			mode='invalid end states[[:space:]]+\+'
		fi
		if ! grep -q 'errors: 0$' "$out"; then
			not_ok "$what" "$(grep -E '^pan:[0-9]|errors: ' "$out" | cut -c1-200 | head -n 5)" \
				"the trail: PROTOCOL_KEEP=1 sh tests/protocol.sh, then in DIR/$name: spin -DCONF=$conf${defs:+ $defs} -t -p protocol.pml"
		elif grep -qiE "search not completed|$limits" "$out"; then
			not_ok "$what" "incomplete search:" "$(grep -iE "search not completed|$limits" "$out")"
		elif ! grep -qE "$mode" "$out"; then
			not_ok "$what" "not the run intended: no '$mode' in pan's report"
		else
			ok "$what"
			states=$(awk '/states, stored/ { print $1 }' "$out")
			total=$((total + states))
			echo "# $name: $(figures "$out")"
		fi
	else
		# (a run that finds an error stops there: "Search not completed")
		if grep -qiE "$limits" "$out"; then
			not_ok "$what" "incomplete search:" "$(grep -iE "$limits" "$out")"
		elif grep -qE 'errors: [1-9]' "$out" && grep -qE "$expect" "$out"; then
			ok "$what"
			echo "# $name: found at depth $(sed -n 's/.*(at depth \([0-9]*\)).*/\1/p' "$out" | head -n 1): $(grep -E "$expect" "$out" | head -n 1 | cut -c1-80)"
		else
			not_ok "$what" "spin found no such violation:" "$(grep -E '^pan:[0-9]|errors: ' "$out" | cut -c1-200 | head -n 5)"
		fi
	fi
done
echo "# states explored by the passing runs: $total"
if [ -n "${PROTOCOL_KEEP:-}" ]; then
	trap - EXIT
	echo "# runs kept in $tmp"
fi
[ "$failed" -eq 0 ]
