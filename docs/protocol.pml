/*
 * docs/protocol.pml - a Promela model of the multi-collection commit
 * protocol of docs/protocol.md, checked with spin (sh tests/protocol.sh).
 *
 * What a collection is here: its ref (ver: the commit it points at, a
 * counter, so a CAS can never be fooled by an old value coming back), the
 * head revision (hT: its transaction, hS: its status) and its history as
 * flags: pend[c] bit t = T's pending revision is in c's history, revd[c]
 * bit t = T's revert revision is; dec bit t = T's decision is in the
 * history of its primary, abr bit t = an abort record for T is.  The tree
 * of the head is the set of transactions whose changes it holds:
 * TREE(c) = pend & ~revd, plus the decisions of the transactions whose
 * primary c is.  Block contents, log entries, replay and clocks are
 * abstracted away: a revision is (transaction, status).
 *
 * Processes: one writer (coordinator) per transaction, which may crash
 * before any write (a crash between two reads is the same as one before
 * the next write); a recoverer, the "whoever comes next" of the protocol,
 * which resolves pending revisions, aborting the expired ones through the
 * primary; a clock, which may expire a pending transaction at any moment
 * after its first pend; a reader of two collections; and a monitor of the
 * invariants.  Writers resolve what they meet too, exactly as the
 * recoverer does, and may give up while waiting (the busy timeout).
 *
 * Configurations (spin -DTHREE for the second):
 *   default  collections a < b, T0 and T1 both over {a, b} (primary b)
 *   THREE    collections a < b < c, T0 over {a, b} (primary b), T1 over
 *            {b, c} (primary c), T2 over {a, b, c} (primary c); the reader
 *            reads a and b, which T2 changes but does not decide.
 *
 * tests/protocol.sh also checks mutants of this file (sed on the lines
 * marked MUTANT-n) to show that the properties can fail.
 */

#ifdef THREE
#define NC 3
#define NW 3
#define COLL(t)  ((t) == 0 -> 3 : ((t) == 1 -> 6 : 7))
#define PRIM(t)  ((t) == 0 -> 1 : 2)
#define PMASK(c) ((c) == 1 -> 1 : ((c) == 2 -> 6 : 0))
#define RMASK    5              /* the transactions over both a and b */
#else
#define NC 2
#define NW 2
#define COLL(t)  3
#define PRIM(t)  1
#define PMASK(c) ((c) == 1 -> 3 : 0)
#define RMASK    3
#endif
#define NT NW                   /* one transaction per writer */

#define B(t) (1 << (t))

/* status of a revision (Opt-Status) */
#define NONE      0             /* no revision yet */
#define COMMITTED 1             /* a decision, or an ordinary revision */
#define PENDING   2
#define ABORTED   3             /* an abort record (on the primary) */
#define REVERT    4             /* a revert revision (Opt-Status: aborted) */

byte ver[NC];                   /* the ref: which commit */
byte hT[NC];                    /* head revision: its transaction */
byte hS[NC];                    /* head revision: its status */
byte pend[NC];                  /* history: pending revisions, by transaction */
byte revd[NC];                  /* history: revert revisions, by transaction */
byte dec;                       /* history of the primary: decisions */
byte abr;                       /* history of the primary: abort records */
byte ack;                       /* coordinators that reported success */
byte exp;                       /* transactions whose pending revisions expired */
byte ndone;                     /* writers that ended (crashed or not) */

#define TREE(c) ((pend[c] & ~revd[c]) | (dec & PMASK(c)))
/* the head is a pending revision whose transaction is not committed:
 * readers read its parent, writers may not build on it */
#define UNDEC(c) (hS[c] == PENDING && !(dec & B(hT[c])))
/* what a reader of collection c sees (lib/store.c: opt_snap_open) */
#define VIS(c) (UNDEC(c) -> TREE(c) & ~B(hT[c]) : TREE(c))   /* MUTANT-4 */
#define HAS(c, t) ((VIS(c) >> (t)) & 1)

/* T's collections all show T, or none does */
#define AGREE(t, c) (!(COLL(t) & B(c)) || HAS(c, t) == HAS(PRIM(t), t))
/* an acknowledged T is decided, not aborted, and visible everywhere */
#define ACKED(t, c) (!(ack & B(t)) || !(COLL(t) & B(c)) || HAS(c, t))
#ifdef THREE
#define EACH_C(P, t) (P(t, 0) && P(t, 1) && P(t, 2))
#define EACH(P) (EACH_C(P, 0) && EACH_C(P, 1) && EACH_C(P, 2))
#define NOUNDEC (!UNDEC(0) && !UNDEC(1) && !UNDEC(2))
#define PENDED(t) (((pend[0] | pend[1] | pend[2]) >> (t)) & 1)
#define UNRESOLVED ((pend[0] & ~revd[0] & ~dec) | (pend[1] & ~revd[1] & ~dec) | (pend[2] & ~revd[2] & ~dec))
#else
#define EACH_C(P, t) (P(t, 0) && P(t, 1))
#define EACH(P) (EACH_C(P, 0) && EACH_C(P, 1))
#define NOUNDEC (!UNDEC(0) && !UNDEC(1))
#define PENDED(t) (((pend[0] | pend[1]) >> (t)) & 1)
#define UNRESOLVED ((pend[0] & ~revd[0] & ~dec) | (pend[1] & ~revd[1] & ~dec))
#endif

#define ATOMIC    EACH(AGREE)
#define ONE_DEC   ((dec & abr) == 0)
#define NO_LOST   ((ack & ~dec) == 0 && (ack & abr) == 0 && EACH(ACKED))
#define INVARIANT (ATOMIC && ONE_DEC && NO_LOST)

/* every writer ended and every pending revision is committed or reverted */
#define ALL_RESOLVED (ndone == NW && UNRESOLVED == 0 && NOUNDEC)

/* fate of transaction u, read in the history of its primary */
#define F_NONE 0                /* in flight */
#define F_DEC  1                /* committed */
#define F_ABR  2                /* aborted */
#define F_EXP  3                /* neither, and expired */

#define CRASH(crashy) if :: crashy -> goto stop :: true fi

/*
 * Make the head of collection c0 one a writer may build on: resolve a
 * pending revision there through its primary, reverting it (aborted),
 * aborting it (expired: an abort record on the primary, after resolving
 * the primary's own head), or waiting (in flight; a crashy process may
 * give up, the busy timeout).  Leaves in s the ref value of c0 it read.
 * Each read is one atomic step, each write one CAS; the CAS carries the
 * value the decision to write was based on.
 */
inline settle(c0, crashy) {
	x = c0;
	do
	:: atomic {
		s = ver[x];
		if
		:: hS[x] == PENDING ->
			u = hT[x];
			/* the primary of u: its ref and history */
			ps = ver[PRIM(u)];
			pb = !UNDEC(PRIM(u));
			f = F_NONE;
			if :: exp & B(u) -> f = F_EXP :: else fi;
			if :: abr & B(u) -> f = F_ABR :: else fi;
			if :: dec & B(u) -> f = F_DEC :: else fi    /* MUTANT-2 */
		:: else -> f = F_DEC
		fi
	   }
		if
		:: f == F_DEC ->        /* x may be built on */
			if
			:: x == c0 -> break
			:: else -> x = c0
			fi
		:: f == F_ABR ->        /* revert x */
			CRASH(crashy);
			atomic {
				if
				:: ver[x] == s ->
					ver[x]++; hT[x] = u; hS[x] = REVERT; revd[x] = revd[x] | B(u)
				:: else
				fi
			}
			x = c0
		:: f == F_EXP && !pb -> /* the primary's head first */
			x = PRIM(u)
		:: f == F_EXP && pb ->  /* abort u through its primary */
			CRASH(crashy);
			atomic {
				if
				:: ver[PRIM(u)] == ps ->        /* MUTANT-3 */
					ver[PRIM(u)]++; hT[PRIM(u)] = u; hS[PRIM(u)] = ABORTED; abr = abr | B(u)
				:: else
				fi
			}
			x = c0
		:: f == F_NONE ->       /* in flight: back off */
			if
			:: ((dec | abr | exp) & B(u))
			:: crashy -> goto stop
			fi
		fi
	od;
	x = 0; u = 0; f = 0; ps = 0; pb = 0
}

/* the coordinator of transaction t */
proctype writer(byte t)
{
	byte c, x, s, u, f, ps;
	bool pb, ok;

	/* 1. pend, in name order, on every collection but the primary */
	c = 0;
	do
	:: c == PRIM(t) -> break
	:: c < PRIM(t) && !(COLL(t) & B(c)) -> c++
	:: c < PRIM(t) && (COLL(t) & B(c)) ->
		settle(c, 1);
		CRASH(1);
		atomic {
			if
			:: ver[c] == s ->
				ver[c]++; hT[c] = t; hS[c] = PENDING; pend[c] = pend[c] | B(t); c++
			:: else
			fi;
			s = 0
		}
	od;
	c = 0;
	/* 2. decide: CAS the decision on the primary */
decide:
	settle(PRIM(t), 1);
	if
	:: abr & B(t) -> goto aborted               /* MUTANT-1a */
	:: else
	fi;
cas:
	CRASH(1);
	atomic {
		if
		:: ver[PRIM(t)] == s ->
			ver[PRIM(t)]++; hT[PRIM(t)] = t; hS[PRIM(t)] = COMMITTED;
			dec = dec | B(t); ack = ack | B(t); ok = 1
		:: else -> ok = 0
		fi;
		s = 0
	}
	if
	:: ok -> goto stop
	:: else -> goto decide                      /* MUTANT-1b */
	fi;
aborted:
	/* exit 3: revert its own pending revisions first */
	c = 0;
	do
	:: c == PRIM(t) -> break
	:: c < PRIM(t) ->
		atomic {
			if
			:: hS[c] == PENDING && hT[c] == t -> s = ver[c]; ok = 1
			:: else -> ok = 0
			fi
		}
		if
		:: ok ->
			CRASH(1);
			atomic {
				if
				:: ver[c] == s ->
					ver[c]++; hS[c] = REVERT; revd[c] = revd[c] | B(t)
				:: else
				fi
			}
		:: else
		fi;
		s = 0; ok = 0; c++
	od;
stop:
	ndone++
}

/* whoever comes next: resolves every pending revision it may resolve */
proctype recoverer()
{
	byte c, x, s, u, f, ps;
	bool pb;

	do
	:: atomic { ALL_RESOLVED -> break }
	:: atomic { UNDEC(0) && ((abr | exp) & B(hT[0])) -> c = 0 }; settle(c, 0); s = 0; c = 0
	:: atomic { UNDEC(1) && ((abr | exp) & B(hT[1])) -> c = 1 }; settle(c, 0); s = 0; c = 0
#ifdef THREE
	:: atomic { UNDEC(2) && ((abr | exp) & B(hT[2])) -> c = 2 }; settle(c, 0); s = 0; c = 0
#endif
	od;
stop:
	/* the end state: nothing left pending, nothing lost */
	assert(ALL_RESOLVED);
	assert((revd[0] & dec) == 0 && (revd[1] & dec) == 0);
	assert(INVARIANT)
}

/* time passes: a pending transaction may expire at any moment */
proctype clock()
{
end:
	do
	:: atomic { !(exp & B(0)) && PENDED(0) && !((dec | abr) & B(0)) -> exp = exp | B(0) }
	:: atomic { !(exp & B(1)) && PENDED(1) && !((dec | abr) & B(1)) -> exp = exp | B(1) }
#ifdef THREE
	:: atomic { !(exp & B(2)) && PENDED(2) && !((dec | abr) & B(2)) -> exp = exp | B(2) }
#endif
	od
}

/*
 * A reader of collections a and b (two refs, read one after the other).
 * It resolves the pending heads it read through their primaries, then
 * reads both refs again and starts over if either moved: then every ref
 * it used held its value at the moment each primary was read, so what it
 * sees of each transaction is one moment's view.  Without the second
 * reading (MUTANT-5, what docs/protocol.md describes) a reader can see
 * part of a transaction.
 */
proctype reader()
{
	byte v0, v1, t0, t1, h0, h1;

	do
	:: atomic { v0 = ver[0]; t0 = TREE(0); h0 = (hS[0] == PENDING -> hT[0] : NT) }
		atomic { v1 = ver[1]; t1 = TREE(1); h1 = (hS[1] == PENDING -> hT[1] : NT) }
		if
		:: h0 != NT && !(dec & B(h0)) -> t0 = t0 & ~B(h0)
		:: else
		fi;
		if
		:: h1 != NT && !(dec & B(h1)) -> t1 = t1 & ~B(h1)
		:: else
		fi;
		if
		:: ver[0] != v0 -> skip                 /* MUTANT-5a */
		:: ver[1] != v1 -> skip                 /* MUTANT-5b */
		:: else -> break
		fi
	od;
	assert(((t0 ^ t1) & RMASK) == 0)
}

active proctype monitor()
{
end:
	atomic { !(INVARIANT) -> assert(INVARIANT) }
}

init {
	atomic {
		run clock();
		run writer(0);
		run writer(1);
#ifdef THREE
		run writer(2);
#endif
		run recoverer();
		run reader()
	}
}

/* once the writers stop, every pending revision gets resolved */
ltl progress { <> ALL_RESOLVED }
