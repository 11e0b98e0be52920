# tests/sync_helper.bash - what the opt-sync suites share: stores seeded
# with every kind of collection, their content as text, trust between
# them, and plain-git tampering with a store's history (the helpers of
# 040-opt-log.bats).

export OPT_FSYNC=0
# git commit-tree (the tampering helpers) wants an identity; HOME is empty
export GIT_AUTHOR_NAME=mallory GIT_AUTHOR_EMAIL=mallory@example.org
export GIT_COMMITTER_NAME=mallory GIT_COMMITTER_EMAIL=mallory@example.org

A=aaaaaaaaaaaaaaaaaaaaaaaaaa
B=bbbbbbbbbbbbbbbbbbbbbbbbbb
C=cccccccccccccccccccccccccc

# ---- helpers ----

# The refs of store $1 (what a refused transfer must leave alone).
refs_of() { git --git-dir="$1" for-each-ref --format='%(refname) %(objectname)'; }

# The public key of store $1.
key_of() { opt-log -C "$1" identity | jq -r .key; }

# Store $1 trusts the keys of stores $2...
trust_all() {
	local s=$1 o
	shift
	for o in "$@"; do opt-log -C "$s" trust "$(key_of "$o")" --name "${o##*/}"; done
}

# The whole content of store $1 as text: every collection's data.
content_of() {
	local s=$1 name kind
	for name in $(opt-block -C "$s" stat | jq -r '.collections[] | .collection + ":" + .type'); do
		kind=${name##*:}
		name=${name%:*}
		echo "== $name ($kind)"
		case $kind in
		tree) opt-tree -C "$s" range "$name" ;;
		diary) opt-diary -C "$s" read "$name" ;;
		*) opt-block -C "$s" ls -c "$name" | jq -r 'select(.type != "COL" and .type != "LGD") | .id' |
			while read -r id; do opt-block -C "$s" get -c "$name" "$id"; done ;;
		esac
	done
}

# A store $1 with a tree, a diary and a block collection.
seed() {
	opt-block init "$1" >/dev/null
	opt-tree -C "$1" put users alice '{"age":30}' >/dev/null
	opt-tree -C "$1" put users bob '{"age":40}' >/dev/null
	opt-diary -C "$1" append events '{"n":1}' '{"n":2}' >/dev/null
	printf '%s\n' "{\"header\":{\"id\":\"$A\",\"type\":\"t\"},\"v\":1}" \
		"{\"header\":{\"id\":\"$B\",\"type\":\"t\"},\"v\":1}" | opt-block -C "$1" put -c things >/dev/null
	echo '["v",0,0,2]' | opt-block -C "$1" apply -c things "$A" >/dev/null
}

# Plain git on the store $GD (the tampering helpers of 040-opt-log.bats).
G() { git --git-dir="$GD" "$@"; }
head_rev() { G cat-file commit "refs/opt/collections/$1" | sed -n 's/^Opt-Rev: //p'; }
bpath() { printf 'blocks/%s/%s/%s' "${1:0:1}" "${1:1:1}" "$1"; }
header_id() { opt-block -C "$GD" ls -c "$1" | jq -r 'select(.type == "COL" or .type == "TRE" or .type == "DIH") | .id'; }
remake_commit() {
	G cat-file commit "$1" | sed '1,/^$/d' | sed -e "${4:-}" >"$TMP/msg"
	if [ -n "$3" ]; then
		G commit-tree "$2" -p "$3" -F "$TMP/msg"
	else
		G commit-tree "$2" -F "$TMP/msg"
	fi
}
tamper() {
	local coll=$1 rev=$2 ref=refs/opt/collections/$1 old n r c tree parent new
	shift 2
	old=$(G rev-parse "$ref")
	n=$(head_rev "$coll")
	c=$(G rev-parse "$old~$((n - rev))")
	export GIT_INDEX_FILE="$TMP/tamper.index" TC=$c TCOLL=$coll
	rm -f "$GIT_INDEX_FILE"
	G read-tree "$c"
	if [ $# -gt 0 ]; then "$@"; fi
	tree=$(G write-tree)
	unset GIT_INDEX_FILE
	parent=$(G rev-parse -q --verify "$c^" || true)
	new=$(remake_commit "$c" "$tree" "$parent" "${MSG_SED:-}")
	for ((r = rev + 1; r <= n; r++)); do
		c=$(G rev-parse "$old~$((n - r))")
		new=$(remake_commit "$c" "$(G rev-parse "$c^{tree}")" "$new")
	done
	G update-ref "$ref" "$new" "$old"
}
put_blob() {
	local b
	b=$(printf '%s' "$2" | G hash-object -w --stdin)
	G update-index --add --cacheinfo "100644,$b,$(bpath "$1")"
}
edit_block() { put_blob "$1" "$(G cat-file blob "$TC:$(bpath "$1")" | jq -c "$2")"; }
edit_log_tail() { edit_block "$(G cat-file blob "$TC:$(bpath "$(header_id "$TCOLL")")" | jq -r .tailId)" "$1"; }
