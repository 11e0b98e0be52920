#!/bin/sh
# tests/run.sh BUILDDIR... - run the unit tests and bats suites against each
# build, print their TAP output, and end with one line "N passed, N failed".
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for b in "$@"; do
	echo "# === build: $b ===" | tee -a "$log"
	for t in "$b"/unit/test-*; do
		[ -x "$t" ] || continue
		echo "# unit: $t" | tee -a "$log"
		t0=$(date +%s)
		"$t" 2>&1 | tee -a "$log"
		echo "# time: $t $(($(date +%s) - t0)) s" | tee -a "$log"
	done
	if [ -n "$(ls tests/*.bats 2>/dev/null)" ]; then
		echo "# bats: $b" | tee -a "$log"
		# a hung suite fails instead of stalling the run: each file gets
		# at most 15 minutes
		out=$(mktemp)
		for f in tests/*.bats; do
			# a suite marked build-independent (a model check) runs
			# with the first build only
			if [ "$b" != "$1" ] && grep -q '^# build-independent' "$f"; then
				echo "# $f: build-independent, run with $1" | tee -a "$log"
				continue
			fi
			t0=$(date +%s)
			OPT_BIN="$top/$b/bin" timeout -k 10 900 bats --tap "$f" > "$out" 2>&1
			st=$?
			cat "$out" | tee -a "$log"
			echo "# time: $f $(($(date +%s) - t0)) s" | tee -a "$log"
			if [ "$st" -eq 124 ] || [ "$st" -eq 137 ]; then
				echo "not ok - $f timed out after 900 s" | tee -a "$log"
			elif [ "$st" -ne 0 ] && ! grep -q '^not ok ' "$out"; then
				echo "not ok - $f exited $st without a failing test" | tee -a "$log"
			fi
		done
		rm -f "$out"
	fi
done
passed=$(grep -c '^ok ' "$log")
failed=$(grep -c '^not ok ' "$log")
skipped=$(grep -c '^ok .*# skip' "$log")
passed=$((passed - skipped))
# the last line is always "N passed, N failed"; skipped tests (a tool or
# server missing) are counted on the line before
[ "$skipped" -gt 0 ] && echo "# $skipped skipped (not counted as passed)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
