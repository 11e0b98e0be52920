#!/bin/sh
# tools/demo.sh [BINDIR] - a short tour of opt-block (run by `make demo`).
#
# In a fresh temporary directory it creates a store (./.opt, found there by
# default), writes blocks, applies an operation, reads them back, shows a
# block's history and what the store holds.  Each command is printed as
# "$ command" followed by its output.  Exits non-zero when a step fails.
# DEMO_DIR=DIR runs it in DIR instead (created if absent, and kept).
set -u

bin=${1:-build/bin}
case $bin in
/*) ;;
*) bin=$(pwd)/$bin ;;
esac
if [ ! -x "$bin/opt-block" ]; then
	echo "demo: no $bin/opt-block (build it first: make all)" >&2
	exit 2
fi
PATH=$bin:$PATH
export PATH
unset OPT_STORE

if [ -n "${DEMO_DIR:-}" ]; then
	dir=$DEMO_DIR
	mkdir -p "$dir" || exit 1
else
	dir=$(mktemp -d "${TMPDIR:-/tmp}/opt-demo.XXXXXX") || exit 1
	trap 'rm -rf "$dir"' EXIT
	trap 'exit 130' INT TERM
fi
cd "$dir" || exit 1

n=0
# step COMMAND: print it, run it, stop the demo when it fails.
step() {
	n=$((n + 1))
	printf '\n$ %s\n' "$1"
	if ! eval "$1"; then
		echo "demo: step $n failed: $1" >&2
		exit 1
	fi
}

# say TEXT: a comment between the steps.
say() {
	printf '\n# %s\n' "$1"
}

echo "optimystic demo in $dir"

say "a store is a bare git repository; the programs find ./.opt by default"
step "opt-block init"

say "two blocks, written in one transaction: revision 1 of collection 'users'"
step "printf '%s\\n' '{\"header\":{\"id\":\"alice\",\"type\":\"user\"},\"name\":\"Alice\",\"langs\":[\"c\"]}' '{\"header\":{\"id\":\"bob\",\"type\":\"user\"},\"name\":\"Bob\"}' | opt-block put -c users"
step "opt-block get -c users alice"

say "a block without a header gets an ID, the collection and type 'block'"
step "echo '{\"note\":\"no header here\"}' | opt-block put -c users"

say "block operations: splice an array, set a member (revisions 3 and 4)"
step "echo '[\"langs\",1,0,[\"sh\",\"awk\"]]' | opt-block apply -c users alice"
step "echo '[\"name\",0,0,\"Alice Liddell\"]' | opt-block apply -c users alice"
step "opt-block get -c users alice --pretty"

say "every revision stays readable"
step "opt-block get -c users --rev 1 alice"

say "a transform: delete one block and insert another, one transaction"
step "echo '{\"deletes\":[\"bob\"],\"inserts\":{\"carol\":{\"header\":{\"id\":\"carol\",\"type\":\"user\"},\"name\":\"Carol\"}}}' | opt-block transform -c users"
step "opt-block ls -c users --type user"

say "the revisions that changed a block, with the SHA-256 the log records"
step "opt-block history -c users alice"
step "opt-block history -c users bob"

say "what the store holds"
step "opt-block stat -c users"
step "opt-block stat"

if command -v git >/dev/null 2>&1; then
	say "and plain git reads it: one commit per transaction"
	step "git --git-dir=.opt log --oneline refs/opt/collections/users"
	step "git --git-dir=.opt fsck --strict --no-progress && echo fsck ok"
fi

printf '\ndemo: %d steps, all passed\n' "$n"
