# bash completion for the optimystic programs: opt-block, opt-tree,
# opt-diary, opt-log and opt-sync.
#
# One script serves them all by asking the program being completed:
#   PROG --complete          its commands, then its common options
#   PROG --complete VERB     the options of VERB (an option that takes a
#                            value ends with '=')
# Collection names (for -c/--collection, and the operands that name
# collections: see _opt_operand) come from the store's refs:
#   git --git-dir=STORE for-each-ref refs/opt/collections/
# and remote names (for opt-sync's --since and --as, and its operands that
# name remotes) from its git config, where STORE is the --store/-C on the
# command line, else $OPT_STORE, else the nearest .opt directory upward, as
# the programs find it.
#
# `make install` copies this file to BASHCOMPDIR/<prog> for every program,
# where bash-completion loads it on demand; or source it from ~/.bashrc.

# The store the command line names (or the programs would find).
_opt_store() {
	local i w s=
	for ((i = 1; i < ${#COMP_WORDS[@]}; i++)); do
		((i == COMP_CWORD)) && continue
		w=${COMP_WORDS[i]}
		case $w in
		--store=?*) s=${w#--store=} ;;
		--store | -C)
			s=${COMP_WORDS[i + 1]}
			[[ $s == = ]] && s=${COMP_WORDS[i + 2]}
			;;
		-C?*) s=${w#-C} ;;
		esac
	done
	[[ -z $s ]] && s=${OPT_STORE-}
	if [[ -z $s ]]; then
		local d=$PWD
		while :; do
			if [[ -d $d/.opt ]]; then
				s=$d/.opt
				break
			fi
			[[ -z $d || $d == / ]] && break
			d=${d%/*}
			[[ -z $d ]] && d=/
		done
	fi
	# a leading ~/ that the shell did not expand
	# shellcheck disable=SC2088
	[[ $s == "~/"* ]] && s=$HOME/${s#"~/"}
	[[ -n $s ]] && printf '%s\n' "$s"
}

# The collection names of that store, one a line (nothing when there is no
# store or no git).
_opt_collections() {
	local s
	s=$(_opt_store) || return 0
	[[ -n $s && -d $s ]] || return 0
	command -v git >/dev/null 2>&1 || return 0
	git --git-dir="$s" for-each-ref --format='%(refname:lstrip=3)' refs/opt/collections/ 2>/dev/null
}

# The remote names of that store, one a line.
_opt_remotes() {
	local s
	s=$(_opt_store) || return 0
	[[ -n $s && -d $s ]] || return 0
	command -v git >/dev/null 2>&1 || return 0
	git --git-dir="$s" config --get-regexp '^remote\..*\.url$' 2>/dev/null | sed 's/^remote\.//; s/\.url .*//'
}

# The subcommands of command $1 (opt-sync remote, peer and bundle; the
# words of ordering), one a line.
_opt_subcommands() {
	case $1 in
	remote | peer) printf '%s\n' add rm ls ;;
	bundle) printf '%s\n' create verify ls apply ;;
	ordering) printf '%s\n' home quorum ;;
	esac
}

# What operand $3 (1: the first after the command) of command $2 of program
# $1 names: "collection", "remote", or nothing (file names are offered).
# $4 is the first operand, $5 is 1 when --cluster is on the line.
_opt_operand() {
	case ${1##*/}:$2 in
	opt-tree:put | opt-tree:get | opt-tree:del | opt-tree:range | opt-tree:count | opt-tree:stat | \
		opt-diary:append | opt-diary:read | opt-diary:count | opt-log:show | opt-log:checkpoint)
		(($3 == 1)) && echo collection ;;
	opt-log:verify | opt-sync:where) echo collection ;;
	opt-sync:fetch | opt-sync:pull | opt-sync:push)
		if (($3 == 1)) && [[ $5 != 1 ]]; then echo remote; else echo collection; fi ;;
	opt-sync:status) (($3 == 1)) && echo remote ;;
	opt-sync:remote | opt-sync:peer) (($3 == 2)) && [[ $4 == rm ]] && echo remote ;;
	esac
	return 0
}

# The long name of short option -$2 of verb $3 of program $1, with '='
# appended when it takes a value (read from PROG VERB --help).
_opt_short() {
	local line
	while IFS= read -r line; do
		if [[ $line =~ ^\ +-$2,\ --([A-Za-z0-9-]+)(\ [^ ]+)? ]]; then
			printf -- '--%s%s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]:+=}"
			return 0
		fi
	done < <("$1" ${3:+"$3"} --help 2>/dev/null)
}

# Complete the value $2 of option $1 (a long name, without '=').
_opt_value() {
	local opt=$1 cur=$2
	case $opt in
	--store)
		compopt -o filenames 2>/dev/null
		mapfile -t COMPREPLY < <(compgen -d -- "$cur")
		;;
	--collection)
		mapfile -t COMPREPLY < <(compgen -W "$(_opt_collections)" -- "$cur")
		;;
	--base)
		compopt -o filenames 2>/dev/null
		mapfile -t COMPREPLY < <(compgen -f -- "$cur")
		;;
	--since | --as)
		mapfile -t COMPREPLY < <(compgen -W "$(_opt_remotes)" -- "$cur")
		;;
	--conflict)
		# exec:PROG: the program is the user's to type
		mapfile -t COMPREPLY < <(compgen -W "replay keep-remote fail exec:" -- "$cur")
		[[ ${COMPREPLY[*]} == exec: ]] && compopt -o nospace 2>/dev/null
		;;
	*)
		# a value we know nothing about (a number, a key, a URL)
		COMPREPLY=()
		;;
	esac
}

_opt_complete() {
	local prog=${COMP_WORDS[0]} cur=${COMP_WORDS[COMP_CWORD]}
	local prev='' prev2='' verb='' words w i opt
	COMPREPLY=()
	((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}
	((COMP_CWORD > 1)) && prev2=${COMP_WORDS[COMP_CWORD - 2]}
	# shellcheck disable=SC2088
	[[ $prog == "~/"* ]] && prog=$HOME/${prog#"~/"}
	command -v -- "$prog" >/dev/null 2>&1 || return 0

	# The command is the first operand; before it only the common options
	# are allowed, of which --store/-C takes a value.
	for ((i = 1; i < COMP_CWORD; i++)); do
		w=${COMP_WORDS[i]}
		case $w in
		--store | -C)
			((i++))
			[[ ${COMP_WORDS[i]} == = ]] && ((i++))
			;;
		--) ;;
		-*) ;;
		*)
			verb=$w
			break
			;;
		esac
	done
	# The words on offer: the command's options, or the commands and the
	# common options.
	words=$("$prog" --complete ${verb:+"$verb"} 2>/dev/null)

	# An option's value: "--opt=VALUE" (one word, or three when '=' breaks
	# words), or the word after an option that takes a value.
	if [[ $cur == --*=* ]]; then
		opt=${cur%%=*}
		_opt_value "$opt" "${cur#*=}"
		local k
		for k in "${!COMPREPLY[@]}"; do
			COMPREPLY[k]=$opt=${COMPREPLY[k]}
		done
		return 0
	fi
	if [[ $cur == = && $prev == --* ]]; then
		_opt_value "$prev" ""
		return 0
	fi
	if [[ $prev == = && $prev2 == --* ]]; then
		_opt_value "$prev2" "$cur"
		return 0
	fi
	case $prev in
	-C | --store)
		_opt_value --store "$cur"
		return 0
		;;
	--*)
		if [[ $'\n'$words$'\n' == *$'\n'"$prev="$'\n'* ]]; then
			_opt_value "$prev" "$cur"
			return 0
		fi
		;;
	-?)
		opt=$(_opt_short "$prog" "${prev#-}" "$verb")
		if [[ $opt == *= ]]; then
			_opt_value "${opt%=}" "$cur"
			return 0
		fi
		;;
	esac

	if [[ $cur == -* ]]; then
		mapfile -t COMPREPLY < <(compgen -W "$(grep -- '^-' <<<"$words")" -- "$cur")
		if ((${#COMPREPLY[@]} == 1)) && [[ ${COMPREPLY[0]} == *= ]]; then
			compopt -o nospace 2>/dev/null
		fi
		return 0
	fi
	if [[ -z $verb ]]; then
		mapfile -t COMPREPLY < <(compgen -W "$(grep -v -- '^-' <<<"$words")" -- "$cur")
		return 0
	fi
	# which operand this is: count those before it, skipping options and
	# their values
	local j n=1 first='' cluster=0 dd=0
	for ((j = i + 1; j < COMP_CWORD; j++)); do
		w=${COMP_WORDS[j]}
		if ((dd)); then
			((n++))
			[[ -z $first ]] && first=$w
			continue
		fi
		case $w in
		--) dd=1 ;;
		--cluster) cluster=1 ;;
		--store | -C)
			((j++))
			[[ ${COMP_WORDS[j]} == = ]] && ((j++))
			;;
		--*=*) ;;
		--*)
			if [[ $'\n'$words$'\n' == *$'\n'"$w="$'\n'* ]]; then
				((j++))
				[[ ${COMP_WORDS[j]} == = ]] && ((j++))
			fi
			;;
		-?)
			[[ $(_opt_short "$prog" "${w#-}" "$verb") == *= ]] && ((j++))
			;;
		-*) ;;
		*)
			((n++))
			[[ -z $first ]] && first=$w
			;;
		esac
	done
	# the first operand of a command with subcommands
	if ((n == 1)) && [[ -n $(_opt_subcommands "$verb") ]]; then
		mapfile -t COMPREPLY < <(compgen -W "$(_opt_subcommands "$verb")" -- "$cur")
		return 0
	fi
	case $(_opt_operand "$prog" "$verb" "$n" "$first" "$cluster") in
	collection)
		mapfile -t COMPREPLY < <(compgen -W "$(_opt_collections)" -- "$cur")
		return 0
		;;
	remote)
		mapfile -t COMPREPLY < <(compgen -W "$(_opt_remotes)" -- "$cur")
		return 0
		;;
	esac
	# an operand of the command: file names
	compopt -o default 2>/dev/null
	return 0
}

complete -F _opt_complete opt-block opt-tree opt-diary opt-log opt-sync
