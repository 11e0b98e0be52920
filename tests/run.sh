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
		"$t" 2>&1 | tee -a "$log"
	done
	if [ -n "$(ls tests/*.bats 2>/dev/null)" ]; then
		echo "# bats: $b" | tee -a "$log"
		OPT_BIN="$top/$b/bin" bats --tap tests/*.bats 2>&1 | tee -a "$log"
	fi
done
passed=$(grep -c '^ok ' "$log")
failed=$(grep -c '^not ok ' "$log")
skipped=$(grep -c '^ok .*# skip' "$log")
passed=$((passed - skipped))
if [ "$skipped" -gt 0 ]; then
	echo "$passed passed, $failed failed, $skipped skipped"
else
	echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
