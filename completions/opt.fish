# fish completion for @PROG@, one of the optimystic programs (opt-block,
# opt-tree, opt-diary, opt-log, opt-sync).
#
# One script serves them all by asking the program being completed:
#   PROG --complete          its commands, then its common options
#   PROG --complete VERB     the options of VERB (an option that takes a
#                            value ends with '=')
# Collection names (for -c/--collection, and the operands that name
# collections: see __opt_operand) come from the store's refs:
#   git --git-dir=STORE for-each-ref refs/opt/collections/
# and remote names (for opt-sync's --since and --as, and its operands that
# name remotes) from its git config, where STORE is the --store/-C on the
# command line, else $OPT_STORE, else the nearest .opt directory upward, as
# the programs find it.
#
# `make install` writes this file, with @PROG@ replaced by the program's
# name, to FISHCOMPDIR/<prog>.fish, where fish loads it on demand.

# The store the command line names (or the programs would find).
function __opt_store
    set -l words (commandline -opc)
    set -l s
    set -l n (count $words)
    for i in (seq 2 $n)
        switch $words[$i]
            case '--store=?*'
                set s (string replace -- '--store=' '' $words[$i])
            case --store -C
                if test $i -lt $n
                    set s $words[(math $i + 1)]
                end
            case '-C?*'
                set s (string sub -s 3 -- $words[$i])
        end
    end
    if test -z "$s"; and set -q OPT_STORE
        set s $OPT_STORE
    end
    if test -z "$s"
        set -l d $PWD
        while true
            if test -d $d/.opt
                set s $d/.opt
                break
            end
            if test -z "$d"; or test "$d" = /
                break
            end
            set d (string replace -r '/[^/]*$' '' -- $d)
            test -z "$d"; and set d /
        end
    end
    set s (string replace -r '^~/' "$HOME/" -- $s)
    test -n "$s"; and printf '%s\n' $s
end

function __opt_collections
    set -l s (__opt_store)
    test -n "$s"; and test -d "$s"; or return 0
    command -q git; or return 0
    git --git-dir=$s for-each-ref --format='%(refname:lstrip=3)' refs/opt/collections/ 2>/dev/null
end

function __opt_remotes
    set -l s (__opt_store)
    test -n "$s"; and test -d "$s"; or return 0
    command -q git; or return 0
    git --git-dir=$s config --get-regexp '^remote\..*\.url$' 2>/dev/null | string replace -r '^remote\.(.*)\.url .*' '$1'
end

# What operand $argv[3] (1: the first after the command) of command
# $argv[2] of program $argv[1] names: "collection", "remote", or nothing
# (file names are offered).  $argv[4] is the first operand, $argv[5] is 1
# when --cluster is on the line.
function __opt_operand
    set -l n $argv[3]
    switch (basename -- $argv[1]):$argv[2]
        case opt-tree:put opt-tree:get opt-tree:del opt-tree:range opt-tree:count opt-tree:stat \
            opt-diary:append opt-diary:read opt-diary:count opt-log:show opt-log:checkpoint
            test $n -eq 1; and echo collection
        case opt-log:verify opt-sync:where
            echo collection
        case opt-sync:fetch opt-sync:pull opt-sync:push
            if test $n -eq 1 -a "$argv[5]" != 1
                echo remote
            else
                echo collection
            end
        case opt-sync:status
            test $n -eq 1; and echo remote
        case opt-sync:remote opt-sync:peer
            test $n -eq 2 -a "$argv[4]" = rm; and echo remote
    end
    return 0
end

# The subcommands of command $argv[1] (opt-sync remote, peer and bundle;
# the words of ordering).
function __opt_subcommands
    switch $argv[1]
        case remote peer
            printf '%s\n' add rm ls
        case bundle
            printf '%s\n' create verify ls apply
        case ordering
            printf '%s\n' home quorum
        case '*'
            return 1
    end
end

# Print the values of option $argv[1] (a long name) that start with
# $argv[2], each prefixed with $argv[3].
function __opt_values
    set -l opt $argv[1]
    set -l cur $argv[2]
    set -l pre $argv[3]
    switch $opt
        case --store
            for d in (__fish_complete_directories $cur)
                printf '%s%s\n' $pre (string split -f1 \t -- $d)
            end
        case --collection
            for c in (__opt_collections)
                printf '%s%s\n' $pre $c
            end
        case --since --as
            for r in (__opt_remotes)
                printf '%s%s\n' $pre $r
            end
        case --conflict
            for c in replay keep-remote fail exec:
                printf '%s%s\n' $pre $c
            end
        case --base
            for f in (__fish_complete_path $cur)
                printf '%s%s\n' $pre (string split -f1 \t -- $f)
            end
    end
end

# The candidates for the token being completed.
function __opt_complete
    set -l words (commandline -opc)
    set -l cur (commandline -ct)
    set -l prog $words[1]
    command -q -- $prog; or test -x "$prog"; or return 0

    # The command is the first operand; before it only the common options
    # are allowed, of which --store/-C takes a value.
    set -l verb
    set -l vi 0
    set -l n (count $words)
    set -l i 2
    while test $i -le $n
        switch $words[$i]
            case --store -C
                set i (math $i + 1)
            case '-*'
            case '*'
                set verb $words[$i]
                set vi $i
                break
        end
        set i (math $i + 1)
    end
    set -l list ($prog --complete $verb 2>/dev/null)

    # An option's value: "--opt=VALUE", or the word after an option that
    # takes one.
    if string match -q -- '--*=*' $cur
        set -l opt (string split -m1 -f1 = -- $cur)
        __opt_values $opt (string split -m1 -f2 = -- $cur) $opt=
        return 0
    end
    set -l prev
    test $n -ge 2; and set prev $words[$n]
    switch "$prev"
        case -C --store
            __opt_values --store $cur ''
            return 0
        case '--*'
            if contains -- $prev= $list
                __opt_values $prev $cur ''
                return 0
            end
        case '-?'
            # a short option: its long name, and whether it takes a
            # value, come from PROG VERB --help
            for line in ($prog $verb --help 2>/dev/null)
                set -l m (string match -r -- "^ +$prev, (--[A-Za-z0-9-]+) [^ ]+" $line)
                if test (count $m) -ge 2
                    __opt_values $m[2] $cur ''
                    return 0
                end
            end
    end

    if string match -q -- '-*' $cur
        string match -- '-*' $list
        return 0
    else if test -z "$verb"
        string match -v -- '-*' $list
        return 0
    end
    # which operand this is: count those before it, skipping options and
    # their values
    set -l k 1
    set -l first
    set -l cluster 0
    set -l dd 0
    set -l j (math $vi + 1)
    while test $j -le $n
        set -l w $words[$j]
        if test $dd -eq 1
            set k (math $k + 1)
            test -z "$first"; and set first $w
        else
            switch $w
                case --
                    set dd 1
                case --cluster
                    set cluster 1
                case --store -C
                    set j (math $j + 1)
                case '--*=*'
                case '--*'
                    contains -- $w= $list; and set j (math $j + 1)
                case '-?'
                    for line in ($prog $verb --help 2>/dev/null)
                        if string match -q -r -- "^ +$w, --[A-Za-z0-9-]+ [^ ]+" $line
                            set j (math $j + 1)
                            break
                        end
                    end
                case '-*'
                case '*'
                    set k (math $k + 1)
                    test -z "$first"; and set first $w
            end
        end
        set j (math $j + 1)
    end
    if test $k -eq 1; and set -l subs (__opt_subcommands $verb)
        printf '%s\n' $subs
        return 0
    end
    switch (__opt_operand $prog $verb $k "$first" $cluster)
        case collection
            __opt_collections
        case remote
            __opt_remotes
        case '*'
            # an operand of the command: file names
            __fish_complete_path $cur
    end
end

complete -c @PROG@ -f -a '(__opt_complete)'
