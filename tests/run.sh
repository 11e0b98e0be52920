#!/bin/sh
# tests/run.sh BUILDDIR... - run the unit tests and bats suites against each
# build, print their TAP output, and end with one line "N passed, N failed".
#
# The jobs (a unit test or a bats suite, against one build) run
# OPT_CHECK_JOBS at a time (default 2, the cores of the machines we test
# on; 1 runs them one after another).  Each job's output is printed whole
# when it ends, followed by "# time: JOB N s".  The queue starts with the
# unit tests, then the suites from the highest number down: the long
# ones (the opt-sync suites, the randomized ones) start first, so that
# the two lanes end close together.
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log=$work/log
: >"$log"
first=$1

# The queue, one job a line: "BUILD unit PATH" or "BUILD bats PATH".
for b in "$@"; do
	for t in "$b"/unit/test-*; do
		[ -x "$t" ] && echo "$b unit $t"
	done
done >"$work/jobs"
for f in $(ls -r tests/*.bats 2>/dev/null); do
	for b in "$@"; do
		# a suite marked build-independent (a model check, the fuzz
		# harnesses that build themselves) runs with the first build only
		if [ "$b" != "$first" ] && grep -q '^# build-independent' "$f"; then
			echo "# $f: build-independent, run with $first" >>"$log"
			continue
		fi
		echo "$b bats $f"
	done
done >>"$work/jobs"
echo 1 >"$work/next"

# The number of the next job to run, or nothing when the queue is empty.
take() {
	flock "$work/lock" sh -c 'n=$(cat "$1"); echo $((n + 1)) >"$1"; echo "$n"' _ "$work/next"
}

# Run one job; print its output whole, under the lock, and keep it.
run_job() {
	b=$1 kind=$2 f=$3 out=$4
	t0=$(date +%s)
	if [ "$kind" = unit ]; then
		echo "# unit: $f ($b)" >"$out"
		timeout -k 10 900 "$f" >>"$out" 2>&1
	else
		echo "# bats: $f ($b)" >"$out"
		OPT_BIN="$top/$b/bin" timeout -k 10 900 bats --tap "$f" >>"$out" 2>&1
	fi
	st=$?
	echo "# time: $f ($b) $(($(date +%s) - t0)) s" >>"$out"
	# a hung job fails instead of stalling the run: each gets at most
	# 15 minutes
	if [ "$st" -eq 124 ] || [ "$st" -eq 137 ]; then
		echo "not ok - $f ($b) timed out after 900 s" >>"$out"
	elif [ "$st" -ne 0 ] && ! grep -q '^not ok ' "$out"; then
		echo "not ok - $f ($b) exited $st without a failing test" >>"$out"
	fi
	flock "$work/lock" sh -c 'cat "$1" | tee -a "$2"' _ "$out" "$log"
}

lane() {
	while n=$(take) && job=$(sed -n "${n}p" "$work/jobs") && [ -n "$job" ]; do
		# shellcheck disable=SC2086
		run_job $job "$work/out.$1"
	done
}

cat "$log"
jobs=${OPT_CHECK_JOBS:-2}
i=1
while [ "$i" -le "$jobs" ]; do
	lane "$i" &
	i=$((i + 1))
done
wait

passed=$(grep -c '^ok ' "$log")
failed=$(grep -c '^not ok ' "$log")
skipped=$(grep -c '^ok .*# skip' "$log")
passed=$((passed - skipped))
# the last line is always "N passed, N failed"; skipped tests (a tool or
# server missing) are counted on the line before
[ "$skipped" -gt 0 ] && echo "# $skipped skipped (not counted as passed)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
