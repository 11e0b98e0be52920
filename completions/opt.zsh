#compdef opt-block opt-tree opt-diary opt-log opt-sync
# zsh completion for the optimystic programs: opt-block, opt-tree,
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
# `make install` copies this file to ZSHCOMPDIR/_<prog> for every program;
# compinit finds it there (ZSHCOMPDIR must be in $fpath).  Sourcing it after
# compinit works too.

# _opt_analyse: from $words and $CURRENT, decide what to complete.  Sets
#   _opt_kind   verbs, options, store, collection, remote, conflict, file,
#               none or operand
#   _opt_cands  the candidate words (verbs, options or collection names)
#   _opt_pre    for "--opt=VALUE" words: the "--opt=" part, else empty
#   _opt_cur    the text being completed (without _opt_pre)
_opt_analyse() {
	local prog=${words[1]} cur=${words[CURRENT]} prev= verb= w opt= out
	local -i i vi=0
	_opt_kind=none _opt_pre= _opt_cur=$cur
	_opt_cands=()
	(( CURRENT > 2 )) && prev=${words[CURRENT-1]}
	(( $+commands[$prog] )) || [[ -x ${~prog} ]] || return 0

	# The command is the first operand; before it only the common options
	# are allowed, of which --store/-C takes a value.
	for (( i = 2; i < CURRENT; i++ )); do
		w=${words[i]}
		case $w in
		(--store|-C) (( i++ )) ;;
		(-*) ;;
		(*) verb=$w; vi=i; break ;;
		esac
	done
	out=$(${~prog} --complete ${verb:+$verb} 2>/dev/null)
	local -a list
	list=(${(f)out})

	if [[ $cur == --*=* ]]; then
		opt=${cur%%=*}
		_opt_pre=$opt=
		_opt_cur=${cur#*=}
	elif [[ $prev == (-C|--store) ]]; then
		opt=--store
	elif [[ $prev == --* && ${list[(Ie)$prev=]} -gt 0 ]]; then
		opt=$prev
	elif [[ $prev == -? ]]; then
		# a short option: its long name and whether it takes a value
		# come from PROG VERB --help
		local line
		for line in ${(f)"$(${~prog} ${verb:+$verb} --help 2>/dev/null)"}; do
			if [[ $line =~ "^ +$prev, --([A-Za-z0-9-]+) [^ ]+" ]]; then
				opt=--$match[1]
				break
			fi
		done
	fi
	if [[ -n $opt ]]; then
		case $opt in
		(--store) _opt_kind=store ;;
		(--collection)
			_opt_kind=collection
			_opt_cands=(${(f)"$(_opt_collections)"})
			;;
		(--since|--as)
			_opt_kind=remote
			_opt_cands=(${(f)"$(_opt_remotes)"})
			;;
		(--conflict)
			_opt_kind=conflict
			_opt_cands=(replay keep-remote fail exec:)
			;;
		(--base) _opt_kind=file ;;
		(*) _opt_kind=none ;;
		esac
		return 0
	fi
	if [[ $cur == -* ]]; then
		_opt_kind=options
		_opt_cands=(${(M)list:#-*})
		return 0
	elif [[ -z $verb ]]; then
		_opt_kind=verbs
		_opt_cands=(${list:#-*})
		return 0
	fi
	# which operand this is: count those before it, skipping options and
	# their values
	local -i n=1 cluster=0 dd=0
	local first= line
	for (( i = vi + 1; i < CURRENT; i++ )); do
		w=${words[i]}
		if (( dd )); then
			(( n++ ))
			[[ -z $first ]] && first=$w
			continue
		fi
		case $w in
		(--) dd=1 ;;
		(--cluster) cluster=1 ;;
		(--store|-C) (( i++ )) ;;
		(--*=*) ;;
		(--*) (( ${list[(Ie)$w=]} )) && (( i++ )) ;;
		(-?)
			for line in ${(f)"$(${~prog} $verb --help 2>/dev/null)"}; do
				if [[ $line =~ "^ +$w, --[A-Za-z0-9-]+ [^ ]+" ]]; then
					(( i++ ))
					break
				fi
			done
			;;
		(-*) ;;
		(*)
			(( n++ ))
			[[ -z $first ]] && first=$w
			;;
		esac
	done
	if (( n == 1 )) && [[ -n $(_opt_subcommands $verb) ]]; then
		_opt_kind=verbs
		_opt_cands=(${(f)"$(_opt_subcommands $verb)"})
		return 0
	fi
	case $(_opt_operand $prog $verb $n "$first" $cluster) in
	(collection)
		_opt_kind=collection
		_opt_cands=(${(f)"$(_opt_collections)"})
		;;
	(remote)
		_opt_kind=remote
		_opt_cands=(${(f)"$(_opt_remotes)"})
		;;
	(*) _opt_kind=operand ;;
	esac
}

# The store the command line names (or the programs would find).
_opt_store() {
	local s= w d
	local -i i
	for (( i = 2; i <= $#words; i++ )); do
		(( i == CURRENT )) && continue
		w=${words[i]}
		case $w in
		(--store=?*) s=${w#--store=} ;;
		(--store|-C) s=${words[i+1]} ;;
		(-C?*) s=${w#-C} ;;
		esac
	done
	[[ -z $s ]] && s=${OPT_STORE:-}
	if [[ -z $s ]]; then
		d=$PWD
		while true; do
			if [[ -d $d/.opt ]]; then
				s=$d/.opt
				break
			fi
			[[ -z $d || $d == / ]] && break
			d=${d%/*}
			[[ -z $d ]] && d=/
		done
	fi
	[[ -n $s ]] && print -r -- ${~s}
}

_opt_collections() {
	local s
	s=$(_opt_store)
	[[ -n $s && -d $s ]] || return 0
	(( $+commands[git] )) || return 0
	git --git-dir=$s for-each-ref --format='%(refname:lstrip=3)' refs/opt/collections/ 2>/dev/null
}

_opt_remotes() {
	local s
	s=$(_opt_store)
	[[ -n $s && -d $s ]] || return 0
	(( $+commands[git] )) || return 0
	git --git-dir=$s config --get-regexp '^remote\..*\.url$' 2>/dev/null | sed 's/^remote\.//; s/\.url .*//'
}

# The subcommands of command $1 (opt-sync remote, peer and bundle; the
# words of ordering), one a line.
_opt_subcommands() {
	case $1 in
	(remote|peer) print -l add rm ls ;;
	(bundle) print -l create verify ls apply ;;
	(ordering) print -l home quorum ;;
	esac
}

# What operand $3 (1: the first after the command) of command $2 of program
# $1 names: "collection", "remote", or nothing (file names are offered).
# $4 is the first operand, $5 is 1 when --cluster is on the line.
_opt_operand() {
	case ${1:t}:$2 in
	(opt-tree:(put|get|del|range|count|stat)|opt-diary:(append|read|count)|opt-log:(show|checkpoint))
		(( $3 == 1 )) && print collection ;;
	(opt-log:verify|opt-sync:where) print collection ;;
	(opt-sync:(fetch|pull|push))
		if (( $3 == 1 )) && [[ $5 != 1 ]]; then print remote; else print collection; fi ;;
	(opt-sync:status) (( $3 == 1 )) && print remote ;;
	(opt-sync:(remote|peer)) (( $3 == 2 )) && [[ $4 == rm ]] && print remote ;;
	esac
	return 0
}

_opt() {
	local _opt_kind _opt_pre _opt_cur
	local -a _opt_cands
	_opt_analyse
	[[ -n $_opt_pre ]] && compset -P '*='
	case $_opt_kind in
	(verbs) compadd -a _opt_cands ;;
	(options)
		local -a withval plain
		withval=(${(M)_opt_cands:#*=})
		plain=(${_opt_cands:#*=})
		compadd -S '' -a withval
		compadd -a plain
		;;
	(collection)
		local expl
		_wanted collections expl collection compadd -a _opt_cands
		;;
	(remote)
		local expl
		_wanted remotes expl remote compadd -a _opt_cands
		;;
	(conflict)
		# exec:PROG: the program is the user's to type
		local -a whole
		whole=(${_opt_cands:#exec:})
		compadd -a whole
		compadd -S '' exec:
		;;
	(file) _files ;;
	(store) _files -/ ;;
	(operand) _files ;;
	(*) return 1 ;;
	esac
}

# Autoloaded by compinit (as _opt-block, _opt-tree, ...): complete now.
# Sourced: register for all the programs.
if [[ ${funcstack[1]-} == _opt-* ]]; then
	_opt "$@"
elif (( $+functions[compdef] )); then
	compdef _opt opt-block opt-tree opt-diary opt-log opt-sync
fi
