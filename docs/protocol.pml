/*
 * docs/protocol.pml - a Promela model of the multi-collection commit
 * protocol of docs/protocol.md, checked with spin: sh tests/protocol.sh.
 *
 * A collection is its ref (ver: which commit, a counter, so no CAS is ever
 * fooled by an old value coming back), its head (hP: a pending revision,
 * hT: of which transaction) and its history as flags: pend[c] bit t, T's
 * pending revision is in c's history; revd[c] bit t, T's revert revision
 * is; dec bit t, T's decision is in the history of T's primary; abr bit t,
 * an abort record for T is.  The tree of the head is the set of
 * transactions whose changes it holds: TREE(c).  A CAS is an atomic
 * compare-and-set of ver; every read is one atomic step, and a process
 * acts on a read in a later step (the CAS carries the value it read).
 * Abstracted away: git objects, block contents and log entries (a revision
 * is a transaction and a status), the replay of actions (a retry is a new
 * CAS from the new head), clocks (expiry is an event, below), and
 * single-collection transactions.
 *
 * Processes:
 *  - writer(t): the coordinator of transaction t.  Pends in name order,
 *    then decides by CAS on the primary; after a failed CAS it re-reads the
 *    primary (an abort record: exit 3, reverting its pending revisions
 *    first).  It resolves what it meets on the way (settle) and may crash
 *    before any read, which is the same as crashing anywhere before the
 *    next write, and give up while it waits (the busy timeout, exit 6).
 *  - recoverer: "whoever comes next", a reader or writer that meets
 *    pending revisions: resolves every one that has expired or whose
 *    transaction aborted; it does not crash, and it ends only when the
 *    writers have ended and no pending revision is left (with RECOVER_LATE
 *    it starts only once the writers have ended).
 *  - clock: a transaction with a pending revision, neither decided nor
 *    aborted, may expire at any moment; its coordinator may still try to
 *    decide afterwards.
 *  - reader: reads two collections and checks it saw every transaction
 *    whole (see below); the invariants check readers of one collection.
 *  - monitor: the invariants, in every reachable state.
 *
 * Properties: in every state, for every transaction, all its collections
 * show it (as a reader computes it, VIS) or none does (atomicity); never
 * both a decision and an abort record (one_decision); an acknowledged
 * transaction is decided, never aborted or reverted, and visible in all
 * its collections (no_lost_commit); at the end, every pending revision is
 * committed or reverted (all_resolved, and no invalid end state); and the
 * LTL property progress, <> ALL_RESOLVED, under weak fairness.
 *
 * Configurations (spin -DCONF=n): see below.  tests/protocol.sh also
 * checks mutants of this file (sed on the lines marked MUTANT-n), which
 * must fail, so that the checks cannot pass vacuously.
 */

#ifndef CONF
#define CONF 1
#endif
#if CONF == 1
/* a < b; T0 and T1 over {a, b} (primary b); the reader reads a and b */
#define NC 2
#define NW 2
#define COLL(t)  3
#define PRIM(t)  1
#define PMASK(c) ((c) == 1 -> 3 : 0)
#ifndef NOREADER
#define READER
#endif
#define RMASK    3              /* the transactions over both a and b */
#elif CONF == 2
/* a < b < c; T0 over {a, b} (primary b), T1 over {b, c} and T2 over
 * {a, c} (both primary c).  b is T0's primary and holds T1's pending
 * revision: T0's decision, and an abort of T0 by T2 or the recoverer,
 * must first resolve T1 through c.  No reader (it would add nothing). */
#define NC 3
#define NW 3
#define COLL(t)  ((t) == 0 -> 3 : ((t) == 1 -> 6 : 5))
#define PRIM(t)  ((t) == 0 -> 1 : 2)
#define PMASK(c) ((c) == 1 -> 1 : ((c) == 2 -> 6 : 0))
#elif CONF == 3
/* a < b < c; T0 over {a, b} (primary b), T1 over {a, b, c} (primary c);
 * the reader reads a and b, and so does not read T1's primary */
#define NC 3
#define NW 2
#define COLL(t)  ((t) == 0 -> 3 : 7)
#define PRIM(t)  ((t) == 0 -> 1 : 2)
#define PMASK(c) ((c) == 1 -> 1 : ((c) == 2 -> 2 : 0))
#ifndef NOREADER
#define READER
#endif
#define RMASK    3
#endif
#define NT NW                   /* one transaction per writer */

#define B(t) (1 << (t))

byte ver[NC];                   /* the ref: which commit (a counter) */
bool hP[NC];                    /* the head revision is a pending one ... */
byte hT[NC];                    /* ... of this transaction (0 otherwise) */
byte pend[NC];                  /* history: pending revisions, by transaction */
byte revd[NC];                  /* history: revert revisions, by transaction */
byte dec;                       /* history of the primaries: decisions */
byte abr;                       /* history of the primaries: abort records */
byte ack;                       /* coordinators that reported success */
byte exp;                       /* transactions whose pending revisions expired */
byte ndone;                     /* writers that ended (crashed or not) */

#define TREE(c) ((pend[c] & ~revd[c]) | (dec & PMASK(c)))
/* the head is a pending revision whose transaction is not committed:
 * readers read its parent, writers may not build on it */
#define UNDEC(c) (hP[c] && !(dec & B(hT[c])))
/* what a reader of collection c sees (lib/store/snap.c: opt_snap_open) */
#define VIS(c) (UNDEC(c) -> TREE(c) & ~B(hT[c]) : TREE(c))      /* MUTANT-4 */
#define HAS(c, t) ((VIS(c) >> (t)) & 1)

/* T's collections all show T, or none does */
#define AGREE(t, c) (!(COLL(t) & B(c)) || HAS(c, t) == HAS(PRIM(t), t))
/* an acknowledged T is visible in all its collections */
#define ACKED(t, c) (!(ack & B(t)) || !(COLL(t) & B(c)) || HAS(c, t))
#if NC == 3
#define EACH_C(P, t) (P(t, 0) && P(t, 1) && P(t, 2))
#define EACH(P) (EACH_C(P, 0) && EACH_C(P, 1) && EACH_C(P, 2))
#define NOUNDEC (!UNDEC(0) && !UNDEC(1) && !UNDEC(2))
#define PENDED(t) (((pend[0] | pend[1] | pend[2]) >> (t)) & 1)
#define UNRESOLVED ((pend[0] & ~revd[0] & ~dec) | (pend[1] & ~revd[1] & ~dec) | (pend[2] & ~revd[2] & ~dec))
#define REVDEC ((revd[0] | revd[1] | revd[2]) & dec)
#else
#define EACH_C(P, t) (P(t, 0) && P(t, 1))
#define EACH(P) (EACH_C(P, 0) && EACH_C(P, 1))
#define NOUNDEC (!UNDEC(0) && !UNDEC(1))
#define PENDED(t) (((pend[0] | pend[1]) >> (t)) & 1)
#define UNRESOLVED ((pend[0] & ~revd[0] & ~dec) | (pend[1] & ~revd[1] & ~dec))
#define REVDEC ((revd[0] | revd[1]) & dec)
#endif

/* the properties: all or nothing, one decision, no lost acknowledged commit */
#define ATOMIC    EACH(AGREE)
#define ONE_DEC   ((dec & abr) == 0)
#define NO_LOST   ((ack & ~dec) == 0 && (ack & abr) == 0 && REVDEC == 0 && EACH(ACKED))
#define INVARIANT (ATOMIC && ONE_DEC && NO_LOST)

/* every writer ended and every pending revision is committed or reverted */
#define ALL_RESOLVED (ndone == NW && UNRESOLVED == 0 && NOUNDEC)

/* what a resolver does after reading a head and the primary's history */
#define A_BUILD  0              /* c0 may be built on: done */
#define A_AGAIN  1              /* read again (x changed) */
#define A_REVERT 2              /* u aborted: revert x */
#define A_ABORT  3              /* u expired, neither decided nor aborted: abort it */
#define A_WAIT   4              /* u in flight: back off */

/*
 * Make the head of collection c0 one a writer may build on: resolve a
 * pending revision there through its primary, reverting it (aborted),
 * aborting it (expired: an abort record on the primary, after resolving
 * the primary's own head the same way), or waiting (in flight).  Leaves
 * in s the ref value of c0 it read last.  Each read is one atomic step,
 * each write one CAS from the ref value read; a crashy process may stop
 * before any read (a crash between a read and the next write is the same
 * as one before that read) and give up while it waits (the busy timeout).
 */
inline settle(c0, crashy) {
	x = c0;
	do
	:: crashy -> goto stop
	:: atomic {
		s = ver[x];
		if
		:: hP[x] ->
			u = hT[x];
			/* read the primary of u: its ref, its head, its history */
			ps = ver[PRIM(u)];
			pb = !UNDEC(PRIM(u));
			if
			:: dec & B(u) -> a = A_BUILD            /* MUTANT-2 */
			:: abr & B(u) -> a = A_REVERT
			:: else -> a = (exp & B(u) -> A_ABORT : A_WAIT)
			fi
		:: else -> a = A_BUILD
		fi;
		if
		:: a == A_BUILD && x != c0 -> x = c0; a = A_AGAIN
		:: a == A_ABORT && !pb -> x = PRIM(u); a = A_AGAIN   /* its head first */
		:: else
		fi;
		if
		:: a == A_BUILD || a == A_AGAIN -> u = 0; ps = 0; pb = 0
		:: else
		fi
	   }
		if
		:: a == A_BUILD -> break
		:: a == A_AGAIN
		:: a == A_REVERT ->
			atomic {
				if
				:: ver[x] == s ->                         /* MUTANT-6 */
					ver[x]++; hP[x] = 0; hT[x] = 0; revd[x] = revd[x] | B(u)
				:: else
				fi;
				x = c0; u = 0; ps = 0; pb = 0
			}
		:: a == A_ABORT ->
			atomic {
				if
				:: ver[PRIM(u)] == ps ->                  /* MUTANT-3 */
					ver[PRIM(u)]++; hP[PRIM(u)] = 0; hT[PRIM(u)] = 0; abr = abr | B(u)
				:: else
				fi;
				x = c0; u = 0; ps = 0; pb = 0
			}
		:: a == A_WAIT ->
			if
			:: ((dec | abr | exp) & B(u)) -> x = c0; u = 0; ps = 0; pb = 0
			:: crashy -> goto stop
			fi
		fi
	od;
	x = 0; a = 0
}

/* the coordinator of transaction t */
proctype writer(byte t)
{
	byte c, x, s, u, ps, a;
	bool pb, ok;

	/* 1. pend, in name order, on every collection but the primary */
	do
	:: c == PRIM(t) -> c = 0; break
	:: c < PRIM(t) && !(COLL(t) & B(c)) -> c++
	:: c < PRIM(t) && (COLL(t) & B(c)) ->
		settle(c, 1);
		atomic {
			if
			:: ver[c] == s ->
				ver[c]++; hP[c] = 1; hT[c] = t; pend[c] = pend[c] | B(t); c++
			:: else             /* the ref moved: read it again */
			fi;
			s = 0
		}
	od;
	/* 2. decide: the decision on the primary, by CAS; success is reported
	 * (ack) only if it succeeds */
decide:
	settle(PRIM(t), 1);
	if
	:: abr & B(t) -> s = 0; goto aborted       /* MUTANT-1a */
	:: else
	fi;
cas:
	atomic {
		if
		:: ver[PRIM(t)] == s ->
			ver[PRIM(t)]++; hP[PRIM(t)] = 0; hT[PRIM(t)] = 0;
			dec = dec | B(t); ack = ack | B(t); ok = 1
		:: else -> ok = 0
		fi;
		s = 0
	}
	if
	:: ok -> ok = 0; goto stop
	:: else -> goto decide                     /* MUTANT-1b */
	fi;
aborted:
	/* exit 3, after trying to revert its own pending revisions */
	do
	:: c == PRIM(t) -> break
	:: c < PRIM(t) -> goto stop
	:: c < PRIM(t) ->
		atomic {
			if
			:: hP[c] && hT[c] == t -> s = ver[c]; ok = 1
			:: else -> c++
			fi
		}
		if
		:: ok ->
			atomic {
				if
				:: ver[c] == s ->
					ver[c]++; hP[c] = 0; hT[c] = 0; revd[c] = revd[c] | B(t)
				:: else
				fi;
				s = 0; ok = 0; c++
			}
		:: else
		fi
	od;
stop:
	atomic { c = 0; x = 0; s = 0; u = 0; ps = 0; a = 0; pb = 0; ok = 0; ndone++ }
}

/* whoever comes next (a reader or a writer): resolves each pending
 * revision it meets once it has expired or its transaction aborted */
proctype recoverer()
{
	byte c, x, s, u, ps, a;
	bool pb, all_resolved;

#ifdef RECOVER_LATE
	ndone == NW;                /* only once every writer ended */
#endif
	do
	:: atomic { ALL_RESOLVED -> break }
	:: atomic { UNDEC(0) && ((abr | exp) & B(hT[0])) -> c = 0 }; settle(c, 0); s = 0; c = 0
	:: atomic { UNDEC(1) && ((abr | exp) & B(hT[1])) -> c = 1 }; settle(c, 0); s = 0; c = 0
#if NC == 3
	:: atomic { UNDEC(2) && ((abr | exp) & B(hT[2])) -> c = 2 }; settle(c, 0); s = 0; c = 0
#endif
	od;
stop:
	/* the end state: every pending revision resolved, nothing lost */
	all_resolved = ALL_RESOLVED;
	assert(all_resolved)
}

/* time passes: the pending revisions of a transaction that is neither
 * decided nor aborted may expire at any moment after its first pend */
proctype clock()
{
end:
	do
	:: atomic { !(exp & B(0)) && PENDED(0) && !((dec | abr) & B(0)) -> exp = exp | B(0) }
	:: atomic { !(exp & B(1)) && PENDED(1) && !((dec | abr) & B(1)) -> exp = exp | B(1) }
#if NW == 3
	:: atomic { !(exp & B(2)) && PENDED(2) && !((dec | abr) & B(2)) -> exp = exp | B(2) }
#endif
	od
}

/*
 * A reader of collections a and b.  As docs/protocol.md describes it
 * (DOC_READER), it reads each collection in turn, resolving a pending head
 * through its primary as it meets it: then it can see part of a
 * transaction (tests/protocol.sh shows spin's trail).  The fix modelled
 * by default: read the refs of a and b, then resolve the pending heads
 * read through their primaries, then read both refs again and start over
 * if either moved.  Every ref used then held the value read at the moment
 * each primary was read, so each transaction is seen as at one moment.
 * MUTANT-5 drops the second reading.
 */
#ifdef READER
proctype reader()
{
	byte v0, v1, t0, t1, h0, h1;
	bool moved;

#ifdef DOC_READER
	atomic { t0 = VIS(0) }
	atomic { t1 = VIS(1) };
#else
	do
	:: atomic { v0 = ver[0]; t0 = TREE(0); h0 = (hP[0] -> hT[0] : NT) }
		atomic { v1 = ver[1]; t1 = TREE(1); h1 = (hP[1] -> hT[1] : NT) }
		atomic {
			if
			:: h0 != NT && !(dec & B(h0)) -> t0 = t0 & ~B(h0)
			:: else
			fi;
			if
			:: h1 != NT && !(dec & B(h1)) -> t1 = t1 & ~B(h1)
			:: else
			fi;
			h0 = 0; h1 = 0
		}
		atomic {
			moved = 0;
			if :: ver[0] != v0 -> moved = 1 :: else fi;   /* MUTANT-5 */
			if :: ver[1] != v1 -> moved = 1 :: else fi;   /* MUTANT-5 */
			v0 = 0; v1 = 0;
			if
			:: moved -> moved = 0; t0 = 0; t1 = 0
			:: else -> break
			fi
		}
	od;
#endif
	assert(((t0 ^ t1) & RMASK) == 0);
	t0 = 0; t1 = 0
}
#endif

/* the invariants, in every reachable state */
active proctype monitor()
{
	bool one_decision, no_lost_commit, atomicity;
end:
	atomic {
		!(INVARIANT) ->
		one_decision = ONE_DEC; no_lost_commit = NO_LOST; atomicity = ATOMIC;
		assert(one_decision); assert(no_lost_commit); assert(atomicity)
	}
}

init {
	atomic {
		run clock();
		run writer(0);
		run writer(1);
#if NW == 3
		run writer(2);
#endif
		run recoverer();
#ifdef READER
		run reader()
#endif
	}
}

/* once the writers stop, every pending revision gets resolved */
ltl progress { <> ALL_RESOLVED }
