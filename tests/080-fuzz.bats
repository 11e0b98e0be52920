#!/usr/bin/env bats
# The libFuzzer harnesses (fuzz/fuzz-*.c, docs/fuzzing.md): `make fuzz`
# builds them with clang, ASan and UBSan, and each runs briefly from its seed
# corpus (fuzz/corpus/NAME) and must end without a crash, a leak, a broken
# property, a time-out or a sanitizer report, for 6 s each.  Inputs the fuzzer finds go to a temporary corpus,
# never to fuzz/corpus; failing inputs go to build-fuzz/artifacts/NAME/.
# The seed is random and printed ("INFO: Seed: N"); OPT_FUZZ_SEED=N repeats
# a run.  Without clang or libFuzzer the tests skip, saying why.
#
# Library bugs found by fuzzing and not fixed yet are listed in
# docs/fuzzing.md; their inputs are in fuzz/crashes/NAME/.  While a bug is
# open the brief runs tolerate it (OPT_FUZZ_KNOWN below, read by the
# harnesses) and the last test skips, naming the inputs that still fail.
# Once a bug is fixed, remove its tag here and its input stays as a
# regression test.
#
# build-independent: the harnesses are their own build (build-fuzz/, with
# ASan and UBSan), whichever OPT_BIN is given, so tests/run.sh runs this
# suite once; make soak runs them for minutes.

load test_helper

HARNESSES="jsonl ops log txdoc"
# Open library bugs (docs/fuzzing.md), tolerated by the brief runs.
KNOWN_BUGS=

setup_file() {
	local reason="" probe
	export FUZZ_STATE="$BATS_FILE_TMPDIR/fuzz-state"
	mkdir -p "$FUZZ_STATE"
	if ! command -v clang >/dev/null 2>&1; then
		reason="clang is not installed (apt-get install clang)"
	else
		probe="$FUZZ_STATE/probe"
		printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
			'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
			>"$probe.c"
		if ! clang -fsanitize=fuzzer,address,undefined -o "$probe" "$probe.c" >"$probe.log" 2>&1; then
			reason="clang cannot link -fsanitize=fuzzer,address,undefined (install libclang-rt-$(clang --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p')-dev): $(head -n 1 "$probe.log")"
		fi
	fi
	if [ -n "$reason" ]; then
		echo "$reason" >"$FUZZ_STATE/skip"
		return 0
	fi
	# a build failure is a test failure, not a reason to skip
	if ! env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS make -C "$TOP" -j2 fuzz >"$FUZZ_STATE/build.log" 2>&1; then
		touch "$FUZZ_STATE/build-failed"
	fi
}

# Skip when the machine cannot build fuzzers; fail when the build failed.
need_fuzzers() {
	if [ -f "$FUZZ_STATE/skip" ]; then
		skip "$(cat "$FUZZ_STATE/skip")"
	fi
	if [ -f "$FUZZ_STATE/build-failed" ]; then
		tail -n 40 "$FUZZ_STATE/build.log"
		fail "make fuzz failed"
	fi
}

# Run harness $1 briefly from its corpus; fail with the essentials of its
# output on a crash, a sanitizer report or a non-zero exit.
fuzz_briefly() {
	local h=$1 secs=6 out status art
	need_fuzzers
	[ -x "$TOP/build-fuzz/fuzz-$h" ] || fail "no $TOP/build-fuzz/fuzz-$h after make fuzz"
	[ -d "$TOP/fuzz/corpus/$h" ] || fail "no seed corpus fuzz/corpus/$h"
	# crash inputs outlive the test's temporary directory
	art="$TOP/build-fuzz/artifacts/$h"
	mkdir -p "$TMP/corpus" "$art"
	out="$TMP/fuzz-$h.log"
	status=0
	OPT_FUZZ_KNOWN="${OPT_FUZZ_KNOWN-$KNOWN_BUGS}" \
	UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}" \
		"$TOP/build-fuzz/fuzz-$h" -max_total_time="$secs" -runs=2000000 -timeout=10 \
		-rss_limit_mb=2048 -seed="${OPT_FUZZ_SEED:-0}" -print_final_stats=1 \
		-artifact_prefix="$art/" "$TMP/corpus" "$TOP/fuzz/corpus/$h" >"$out" 2>&1 ||
		status=$?
	if [ "$status" -ne 0 ] || grep -q -e 'ERROR: AddressSanitizer' -e 'ERROR: LeakSanitizer' \
		-e 'runtime error' -e 'ERROR: libFuzzer' "$out"; then
		grep -e 'INFO: Seed' -e '^fuzz-' -e 'ERROR' -e 'SUMMARY' -e 'runtime error' \
			-e 'Test unit written' "$out" | head -n 20
		echo "--- last lines of the fuzzer's output:"
		tail -n 40 "$out"
		fail "fuzz-$h failed (exit $status); the input is in build-fuzz/artifacts/$h/ (re-run: build-fuzz/fuzz-$h INPUT)"
	fi
	grep -q '^Done [0-9]* runs' "$out" || {
		tail -n 20 "$out"
		fail "fuzz-$h did not finish its run"
	}
	# one line for the log: runs, coverage, speed
	grep -e '^Done' -e 'stat::number_of_executed_units' "$out" | head -n 2 | sed 's/^/# /' >&3
}

@test "make fuzz builds a libFuzzer harness for every fuzz/fuzz-*.c" {
	need_fuzzers
	local f h
	for f in "$TOP"/fuzz/fuzz-*.c; do
		h=$(basename "$f" .c)
		[ -x "$TOP/build-fuzz/$h" ] || fail "make fuzz did not build build-fuzz/$h"
		[ -d "$TOP/fuzz/corpus/${h#fuzz-}" ] || fail "no seed corpus fuzz/corpus/${h#fuzz-}"
	done
}

@test "fuzz-jsonl: the JSON Lines reader and canonical JSON survive a brief run" {
	fuzz_briefly jsonl
}

@test "fuzz-ops: block operations, transforms and the tracker survive a brief run" {
	fuzz_briefly ops
}

@test "fuzz-log: log, chain and btree readers and writers survive a brief run on hostile blocks" {
	fuzz_briefly log
}

@test "fuzz-txdoc: transaction document checks survive a brief run" {
	fuzz_briefly txdoc
}

@test "the seed corpora pass every harness as they are" {
	need_fuzzers
	local h status out
	for h in $HARNESSES; do
		out="$TMP/seeds-$h.log"
		status=0
		OPT_FUZZ_KNOWN= "$TOP/build-fuzz/fuzz-$h" -runs=0 "$TOP/fuzz/corpus/$h" >"$out" 2>&1 || status=$?
		if [ "$status" -ne 0 ]; then
			tail -n 30 "$out"
			fail "fuzz-$h fails on its own seed corpus"
		fi
	done
}

@test "saved crash inputs (fuzz/crashes) no longer fail" {
	need_fuzzers
	local h f open=""
	for h in $HARNESSES; do
		[ -d "$TOP/fuzz/crashes/$h" ] || continue
		for f in "$TOP/fuzz/crashes/$h"/*; do
			[ -f "$f" ] || continue
			case "$f" in *.md | *.txt) continue ;; esac
			OPT_FUZZ_KNOWN= "$TOP/build-fuzz/fuzz-$h" -runs=1 "$f" >"$TMP/crash.log" 2>&1 ||
				open="$open ${f#"$TOP"/}"
		done
	done
	if [ -n "$open" ]; then
		skip "known library bugs still open (docs/fuzzing.md):$open"
	fi
}
