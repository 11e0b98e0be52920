#!/bin/sh
# tests/quorum.sh - model-check docs/quorum.pml (the quorum protocol of
# docs/quorum.md) with spin, and show that the checks can fail.  Prints
# TAP ("ok N - ..." / "not ok N - ...") with comment lines giving the
# states explored; exits 0 only if every check passed.  Needs spin and gcc
# (apt-get install spin gcc).
#
#  - safety, exhaustive (spin -a; gcc -DSAFETY; ./pan), one run per
#    configuration and fault budget: no assertion violated, no invalid end
#    state, search complete;
#  - mutants: copies of the model with one marked line changed by sed
#    (the script checks that sed changed it); each must make spin report
#    the violation it should.
#
# Runs the checks two at a time (QUORUM_JOBS to change): about 40 s of
# CPU.  QUORUM_KEEP=1 keeps the runs (and so spin's trails: spin
# -DCONF=n DEFS -t -p quorum.pml in a run's directory).
set -u

# --- one check, run by xargs: quorum.sh --job NAME TMPDIR ---

# spec NAME: set what (the description), conf, defs (spin -D...), mut (a
# sed script that must change the model, or empty) and expect (pass, or
# an extended regexp of pan's report of the violation that must be found).
# pan.c is compiled without optimisation: -O2 costs more CPU to compile
# than it saves on runs of a few seconds.
spec() {
	conf=1 defs='' mut='' expect=pass
	case $1 in
	safety1) what="safety, configuration 1: two writers, the one-round steady state, a crash" ;;
	safety1down) what="safety, configuration 1 with a peer down (and back)" defs="-DMAXCR=0 -DDOWNA=2" ;;
	safety1late) what="safety, configuration 1 with a late and a repeated push" defs="-DMAXCR=0 -DMAXL=1" ;;
	safety2) what="safety, configuration 2: two writers and a reader through the cluster" conf=2 ;;
	safety3) what="safety, configuration 3: a two-collection transaction, its aborter, a crash" conf=3 ;;
	safety4) what="safety, configuration 4: a membership change (joint, transfer, final), a stale writer, a slow peer" conf=4 ;;
	mutant1) what="mutant: skip the promise check (accept on a peer that promised a higher ballot)" \
		defs=-DMAXCR=0 mut='/MUTANT-1 \*\//s/ && pr\[a\] <= B//' expect='assertion violated chain' ;;
	mutant2) what="mutant: accept without adopting the highest accepted value (build on the value known chosen)" \
		defs=-DMAXCR=0 mut='/MUTANT-2 \*\//s/w = w;/w = kc;/' expect='assertion violated chain' ;;
	mutant3) what="mutant: count a minority as chosen" \
		defs=-DMAXCR=0 mut='/MUTANT-3 \*\//s/QOK(e, m)/((m) != 0)/' expect='assertion violated no_lost_ack' ;;
	mutant4) what="mutant: learn before a majority accepted (the value being proposed)" \
		defs=-DMAXCR=0 mut='/MUTANT-4 \*\//s/kc = kc;/kc = v;/' expect='assertion violated reader' ;;
	mutant5) what="mutant: replay a transaction already in the history (skip only those known chosen)" \
		defs="-DMAXCR=0 -DMAXC=3" mut='/MUTANT-5 \*\//s/!HAS(w, SLOT(mine, k))/!HAS(kc, SLOT(mine, k))/' \
		expect='assertion violated exactly_once' ;;
	mutant6) what="mutant: a peer that does not compare (as libgit2's local transport), with late pushes" \
		defs="-DMAXCR=0 -DMAXL=1" \
		mut='/MUTANT-6 \*\//s/pr\[a\] == op && ab\[a\] == ob && av\[a\] == ox && ep\[a\] == oe/true/' \
		expect='assertion violated chain' ;;
	mutant7) what="mutant: the write-ahead record is lost in a crash (a ballot gets a second value)" \
		mut='/MUTANT-7 \*\//s/skip/rb = 0; rv = 0/' expect='assertion violated one_value' ;;
	mutant8) what="mutant: the reader through the cluster takes the highest accepted value of a minority" conf=2 \
		mut='/MUTANT-8 \*\//s/CHOSEN_BY(e, okm)/okm != 0/' expect='assertion violated reader' ;;
	mutant9) what="mutant: the coordinator decides once its pending revision is accepted by one peer" conf=3 \
		mut='/MUTANT-9 \*\//s/QOK(e, m)/((m) != 0)/' expect='assertion violated atomicity' ;;
	mutant10) what="mutant: the decision does not look for an abort record" conf=3 \
		mut='/MUTANT-10 \*\//s/!HAS(w, TX) && //' expect='assertion violated one_decision' ;;
	mutant11) what="mutant: the final membership value without the transfer" conf=4 \
		mut='/MUTANT-11 \*\//s/c = 0;/c = 1;/' expect='assertion violated chain' ;;
	mutant12) what="mutant: the new placement at once, without the joint value" conf=4 \
		mut='/MUTANT-12 \*\//s/cfg = 1;/cfg = 2;/' expect='assertion violated chain' ;;
	mutant13) what="mutant: a proposer writes over a state of a newer epoch" conf=4 \
		mut='/MUTANT-13 \*\//s/((x) > e)/(0)/' expect='assertion violated chain' ;;
	*) return 1 ;;
	esac
}

job() {
	name=$1 dir=$2/$1
	spec "$name" || exit 2
	mkdir -p "$dir" && cd "$dir" || exit 2
	if [ -n "$mut" ]; then
		sed -e "$mut" "$model" >quorum.pml
		if cmp -s "$model" quorum.pml; then
			echo "the mutation changed nothing: $mut" >diag
			exit 0
		fi
	else
		cp "$model" quorum.pml
	fi
	# shellcheck disable=SC2086
	spin -DCONF="$conf" $defs -a quorum.pml >spin.out 2>&1 || {
		{ echo "spin -a failed:"; head -n 20 spin.out; } >diag
		exit 0
	}
	# shellcheck disable=SC2086
	gcc -w -O0 -DSAFETY -DNOCLAIM -DCOLLAPSE -o pan pan.c >cc.out 2>&1 || {
		{ echo "gcc failed:"; head -n 20 cc.out; } >diag
		exit 0
	}
	./pan -m10000 -w22 >out 2>&1
	echo $? >rc
}

if [ "${1:-}" = --job ]; then
	model=$(cd "$(dirname "$0")/.." && pwd)/docs/quorum.pml
	job "$2" "$3"
	exit 0
fi

# --- the checks, and their TAP report ---

# the long runs first, so that two jobs end about together
checks="safety4 safety3 safety1late safety2 safety1 safety1down mutant1 mutant2 mutant3 mutant4 mutant5 mutant6 mutant7 mutant8 mutant9 mutant10 mutant11 mutant12 mutant13"
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

tmp=$(mktemp -d "${TMPDIR:-/tmp}/opt-quorum.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

# shellcheck disable=SC2086
set -- $checks
echo "1..$#"
echo "# spin: $(spin -V 2>&1 | head -n 1)"
printf '%s\n' "$@" | xargs -P "${QUORUM_JOBS:-2}" -I{} sh "$0" --job {} "$tmp"

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
		if ! grep -q 'errors: 0$' "$out"; then
			not_ok "$what" "$(grep -E '^pan:[0-9]|errors: ' "$out" | cut -c1-200 | head -n 5)" \
				"the trail: QUORUM_KEEP=1 sh tests/quorum.sh, then in DIR/$name: spin -DCONF=$conf${defs:+ $defs} -t -p quorum.pml"
		elif grep -qiE "search not completed|$limits" "$out"; then
			not_ok "$what" "incomplete search:" "$(grep -iE "search not completed|$limits" "$out")"
		elif ! grep -qE 'invalid end states[[:space:]]+\+' "$out"; then
			not_ok "$what" "not the run intended: no 'invalid end states +' in pan's report"
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
			echo "# $name: found at depth $(sed -n 's/.*(at depth \([0-9]*\)).*/\1/p' "$out" | head -n 1) after $(awk '/states, stored/ { print $1 }' "$out") states: $(grep -E "$expect" "$out" | head -n 1 | cut -c1-80)"
		else
			not_ok "$what" "spin found no such violation:" "$(grep -E '^pan:[0-9]|errors: ' "$out" | cut -c1-200 | head -n 5)"
		fi
	fi
done
echo "# states explored by the passing runs: $total"
if [ -n "${QUORUM_KEEP:-}" ]; then
	trap - EXIT
	echo "# runs kept in $tmp"
fi
[ "$failed" -eq 0 ]
