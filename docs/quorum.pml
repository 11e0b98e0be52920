/*
 * docs/quorum.pml - a Promela model of the quorum protocol of
 * docs/quorum.md (CASPaxos over ordinary git servers), checked with spin:
 * sh tests/quorum.sh.
 *
 * A register is a collection; its acceptors are its peers.  Peer a holds
 * the acceptor state pr (promised ballot), ab (accepted ballot), av
 * (accepted value), ep (membership epoch of its writer): the state commit
 * at refs/opt/acceptors/collections/C.  A state never comes back (the
 * promise and the accepted ballot only grow), so comparing the state is
 * comparing the commit: every acceptor step is a compare-and-swap of the
 * whole state (apply), as receive-pack (or the path CAS) does with the
 * ref's old-id.  lr is the peer's learned ref, refs/opt/collections/C.
 *
 * A proposer works in rounds.  A round reads the peers (the ref
 * advertisements of its connections, and a fetch of what they name: one
 * atomic step), decides from that reading alone (views last one round:
 * whether an earlier push took is always settled by reading, so its
 * answer is never needed), then makes one connection per peer, each one
 * atomic step: the state there is read again (the advertisement of that
 * connection) and the transition of the round is pushed when it is still
 * allowed on that state (prepare(B): p < B; accept(B, v): p <= B; never
 * over a newer epoch), with the learn of the newest value it knows
 * chosen.  Its decisions: settle (the recorded proposal is accepted by a
 * quorum: chosen), accept at the highest own ballot a quorum promised
 * (the recorded value, or change() of the highest accepted value among
 * those promises, recorded first), or prepare a ballot above all seen.
 *
 * Faults, each within a budget so that the search stays exhaustive:
 *  - crash (MAXCR): before any reading or push a proposer stops, losing
 *    everything but what is durable in its store: the write-ahead record
 *    (rb, rv, re), whether it is known chosen (rk), the newest value known
 *    chosen (kc), its local transactions; it restarts, or stays down;
 *  - late and repeated pushes (MAXL): a push is delayed (delivered at any
 *    later moment, or never: a lost push), or delivered and delivered
 *    again later; a late or repeated copy carries the state it was
 *    computed from, and must fail its CAS if anything changed;
 *  - a peer down (DOWNA): it goes down once at any moment and may come
 *    back: no reading, no push there meanwhile;
 *  - a slow peer (MAXS): a round goes on without one peer's answer and
 *    gives its connection up ("done at the first majority").
 *
 * Abstractions:
 *  - a value (a collection commit) is the sequence of transactions it
 *    holds, 2 bits each (0 ends it), at most 4: two commits holding the
 *    same transactions in the same order are one value, and ancestry is
 *    prefix (change() only appends to the value it read);
 *  - ballots are small integers c * NP + p (counter c >= 1, proposer p):
 *    ordered by counter, then proposer, unique to a proposer; a proposer
 *    gives up when it would need a counter above MAXC (bounded search);
 *  - no time: backoff, TTLs (expiry is "the aborter may start") and
 *    grace periods matter for progress only, which is not checked;
 *  - the membership register is one variable, cfg (the chosen membership
 *    epoch: 0 the old placement, 1 joint, 2 the new one): it is itself a
 *    register of this protocol (configurations 1-3 check that); a
 *    proposer that meets a newer epoch refreshes to cfg (it reads the
 *    chosen membership value).
 *
 * Properties, asserted when a ballot becomes chosen (a quorum of its
 * epoch accepted it, not necessarily at once: ghost hist), when a
 * proposer acknowledges, when a learned ref moves, and at the end:
 *  - chain: the chosen values form one chain: a value chosen at a ballot
 *    extends every value chosen at a lower one (a ballot may reach its
 *    quorum after a higher one did: its value is then an ancestor);
 *  - one_value: a ballot is accepted with one value (and one epoch);
 *  - no_lost_ack: every acknowledged write is in the newest chosen value;
 *  - exactly_once: no chosen value holds a transaction twice;
 *  - reader: every value a learned ref held, and the value a reader
 *    through the cluster returned, never diverges from the chosen chain
 *    (and at the end is a prefix of it): no single-peer reader ever sees
 *    a state that is later rewound;
 *  - (configuration 3) one_decision: never both T's decision and its
 *    abort record; atomicity: T's decision is chosen in b only while its
 *    pending revision is chosen in a and not reverted.
 *
 * Configurations (spin -DCONF=n; tests/quorum.sh sets the budgets):
 *  1. 3 peers; writers P0 (t1, then t2: the one-round steady state; t2
 *     may be written while t1 is being pushed) and P1 (t3); learned refs.
 *  2. 3 peers; writers P0 (t1) and P1 (t2), and P2 reading through the
 *     cluster (a majority reading; an unfinished proposal is completed).
 *  3. two registers a and b, 3 peers each; T over {a, b} (primary b): its
 *     coordinator pends T on a, then decides it on b; an aborter (T
 *     expired: it may start once T's pending revision is chosen) aborts
 *     T on b, then reverts it on a.
 *  4. a membership change over 4 peers: the placement goes from
 *     {A0, A1, A2} (epoch 0) through joint (epoch 1, quorums of both) to
 *     {A1, A2, A3} (epoch 2).  P1 writes t1 from epoch 0 (stale unless it
 *     meets a newer epoch); P0 chooses the joint value, transfers the
 *     register (a proposal of the identity under joint quorums), chooses
 *     the final value, then writes t2 in it.
 *
 * tests/quorum.sh also checks mutants of this file (sed on the lines
 * marked MUTANT-n), each of which must make spin report the violation it
 * should, so that the checks cannot pass vacuously.
 */

#ifndef CONF
#define CONF 1
#endif

/* roles */
#define W  1                    /* a writer: its transactions */
#define RD 2                    /* a reader through the cluster */
#define CO 3                    /* the coordinator of T (configuration 3) */
#define AB 4                    /* an aborter of T (configuration 3) */
#define RC 5                    /* the membership changer (configuration 4) */

/* per configuration: peers of a placement (NA), registers (NR),
 * proposers (NP), ballot counters 1..MAXC, late pushes (MAXL), crashes
 * (MAXCR), the peer that may go down (DOWNA; 255: none), proposers to
 * wait for at the end (NPROC); tests/quorum.sh sets some with -D */
#if CONF == 1
#define NA 3
#define NR 1
#define NP 2
#define NPROC 2
#ifndef MAXC
#define MAXC 2
#endif
#ifndef MAXL
#define MAXL 0
#endif
#ifndef MAXCR
#define MAXCR 1
#endif
#ifndef DOWNA
#define DOWNA 255
#endif
#elif CONF == 2
#define NA 3
#define NR 1
#define NP 3
#define NPROC 3
#ifndef MAXC
#define MAXC 2
#endif
#ifndef MAXL
#define MAXL 0
#endif
#ifndef MAXCR
#define MAXCR 0
#endif
#ifndef DOWNA
#define DOWNA 255
#endif
#elif CONF == 3
#define NA 3
#define NR 2
#define NP 2
#define NPROC 2
#ifndef MAXC
#define MAXC 3
#endif
#ifndef MAXL
#define MAXL 0
#endif
#ifndef MAXCR
#define MAXCR 1
#endif
#ifndef DOWNA
#define DOWNA 255
#endif
#elif CONF == 4
#define NA 4
#define NR 1
#define NP 2
#define NPROC 2
#ifndef MAXC
#define MAXC 2
#endif
#ifndef MAXL
#define MAXL 0
#endif
#ifndef MAXCR
#define MAXCR 0
#endif
#ifndef DOWNA
#define DOWNA 255
#endif
#endif
#ifndef MAXS
#if CONF == 4
#define MAXS 1                  /* reads that miss a slow peer */
#else
#define MAXS 0
#endif
#endif

/* the placement under each epoch (bit i: peer i) */
#if CONF == 4
#define OLD 7                   /* A0 A1 A2 */
#define NEW 14                  /* A1 A2 A3 */
#else
#define OLD 7
#define NEW 7
#endif
#define NRA (NR * NA)
#define NB ((MAXC + 2) * NP)    /* ballots 0 .. NB-1 */

#define BIT(i) (1 << (i))
#define A(r, i) ((r) * NA + (i))
#define UP(r, i) (!dn || A(r, i) != DOWNA)
#define POP(m) (((m) & 1) + (((m) >> 1) & 1) + (((m) >> 2) & 1) + (((m) >> 3) & 1))
#define MAJ(m, s) (POP((m) & (s)) >= 2)
/* the peers a proposer of epoch e pushes to, and its quorums */
#define INSET(e, i) (((e) == 0 -> OLD : ((e) == 1 -> (OLD | NEW) : NEW)) & BIT(i))
#define QOK(e, m) ((e) == 0 -> MAJ(m, OLD) : ((e) == 1 -> (MAJ(m, OLD) && MAJ(m, NEW)) : MAJ(m, NEW)))
/* what the proposer counts as chosen (the accepts it saw) */
#define CHOSEN_BY(e, m) QOK(e, m)                                   /* MUTANT-3 */
/* what the coordinator of T counts as its pending revision chosen */
#define PEND_CHOSEN(e, m) QOK(e, m)                                 /* MUTANT-9 */

/* ballots */
#define BAL(c, p) ((c) * NP + (p))
#define CNT(b) ((b) / NP)
#define PID(b) ((b) % NP)
#define NXT(b) ((b) + NP)

/* values: sequences of transactions 1..3, 2 bits each */
#define LEN(v) ((v) == 0 -> 0 : ((v) < 4 -> 1 : ((v) < 16 -> 2 : ((v) < 64 -> 3 : 4))))
#define MASK(n) ((1 << (2 * (n))) - 1)
#define PREFIX(u, v) (((v) & MASK(LEN(u))) == (u))
#define ONCHAIN(u, v) (PREFIX(u, v) || PREFIX(v, u))
#define SLOT(v, k) (((v) >> (2 * (k))) & 3)
#define HAS(v, t) (SLOT(v, 0) == (t) || SLOT(v, 1) == (t) || SLOT(v, 2) == (t) || SLOT(v, 3) == (t))
#define APPEND(v, t) (LEN(v) < 4 -> ((v) | ((t) << (2 * LEN(v)))) : (v))
#define CNTT(v, t) ((SLOT(v, 0) == (t)) + (SLOT(v, 1) == (t)) + (SLOT(v, 2) == (t)) + (SLOT(v, 3) == (t)))
#define NODUP(v) (CNTT(v, 1) <= 1 && CNTT(v, 2) <= 1 && CNTT(v, 3) <= 1)

/* configuration 3: the records of T in a (register 0) and b (register 1) */
#define TP 1                    /* a: T's pending revision */
#define TR 2                    /* a: T's revert revision */
#define TD 1                    /* b: T's decision */
#define TX 2                    /* b: T's abort record */
#define ATOMIC (!HAS(top[1], TD) || (HAS(top[0], TP) && !HAS(top[0], TR)))
#define ONE_DEC (!(HAS(top[1], TD) && HAS(top[1], TX)))

/* the peers */
byte pr[NRA];                   /* promised ballot */
byte ab[NRA];                   /* accepted ballot */
byte av[NRA];                   /* accepted value */
byte ep[NRA];                   /* epoch of the state */
byte lr[NRA];                   /* the learned ref */
bool dn;                        /* peer DOWNA is down ... */
bool downs;                     /* ... it went down once */
byte cfg;                       /* configuration 4: the chosen membership epoch */

/* the network: one late (delayed or repeated) push per proposer */
bool lt[NP];
byte lta[NP];                   /* to which acceptor */
byte lto[NP], ltob[NP], ltox[NP], ltoe[NP];     /* the state it expects */
byte ltp[NP], ltb[NP], ltx[NP], lte[NP];        /* the state it writes */
byte lates, crashes, slows;

/* ghosts */
int hist[NRA];                  /* bit b: the acceptor accepted ballot b once */
int bset[NR];                   /* bit b: ballot b was accepted somewhere ... */
byte bv[NR * NB];               /* ... with this value ... */
byte bep[NR * NB];              /* ... by a proposer of this epoch */
int chb[NR];                    /* ballots chosen */
byte top[NR];                   /* the last chosen value */
byte ack[NR];                   /* bit t: transaction t acknowledged */
byte rdv[NR];                   /* what the reader through the cluster returned */
byte ndone;                     /* proposers ended */
hidden byte gi, gm;             /* scratch of the atomic steps */
hidden byte chain, one_value, no_lost_ack, exactly_once, reader, atomicity, one_decision;

/* every learned ref of register r, and the reader's value, on the chain
 * ending at x (at the end: prefixes of it) */
inline readers_on(r, x, fin) {
	reader = 1;
	gi = 0;
	do
	:: gi < NA ->
		if
		:: !ONCHAIN(lr[A(r, gi)], x) || (fin && !PREFIX(lr[A(r, gi)], x)) -> reader = 0
		:: else
		fi;
		gi++
	:: else -> break
	od;
	if
	:: !ONCHAIN(rdv[r], x) || (fin && !PREFIX(rdv[r], x)) -> reader = 0
	:: else
	fi;
	gi = 0;
	assert(reader)
}

/* acceptor a (of register r) accepted ballot b with value x: the ghost
 * bookkeeping, and the checks when b becomes chosen */
inline accepted(r, a, b, x, xe) {
	if
	:: bset[r] & BIT(b) -> one_value = (bv[r * NB + b] == x && bep[r * NB + b] == xe); assert(one_value)
	:: else -> bset[r] = bset[r] | BIT(b); bv[r * NB + b] = x; bep[r * NB + b] = xe
	fi;
	hist[a] = hist[a] | BIT(b);
	gm = 0;
	gi = 0;
	do
	:: gi < NA ->
		if
		:: hist[A(r, gi)] & BIT(b) -> gm = gm | BIT(gi)
		:: else
		fi;
		gi++
	:: else -> break
	od;
	if
	:: !(chb[r] & BIT(b)) && QOK(xe, gm) ->     /* a quorum of the ballot's epoch */
		/* the values chosen at lower ballots are prefixes of x, those
		 * at higher ballots extend it (a ballot may reach its majority
		 * after a higher one did: its value is then an ancestor) */
		chain = 1;
		gi = 1;
		do
		:: gi < NB ->
			if
			:: (chb[r] & BIT(gi)) && gi < b && !PREFIX(bv[r * NB + gi], x) -> chain = 0
			:: (chb[r] & BIT(gi)) && gi > b && !PREFIX(x, bv[r * NB + gi]) -> chain = 0
			:: else
			fi;
			gi++
		:: else -> break
		od;
		gi = 0;
		assert(chain);
		exactly_once = NODUP(x);
		assert(exactly_once);
		if
		:: chb[r] < BIT(b) -> top[r] = x            /* the highest chosen ballot */
		:: else
		fi;
		chb[r] = chb[r] | BIT(b);
		no_lost_ack = (!(ack[r] & BIT(1)) || HAS(top[r], 1)) && (!(ack[r] & BIT(2)) || HAS(top[r], 2)) &&
			      (!(ack[r] & BIT(3)) || HAS(top[r], 3));
		assert(no_lost_ack);
		readers_on(r, top[r], 0);
#if CONF == 3
		one_decision = ONE_DEC;
		assert(one_decision);
		atomicity = ATOMIC;
		assert(atomicity);
#endif
		skip
	:: else
	fi;
	gm = 0;
	gi = 0
}

/* a push arrives at acceptor a of register r: the CAS of the acceptor
 * state from (op, ob, ox, oe) to (np, nb, nx, ne); res: it took */
inline apply(r, a, op, ob, ox, oe, np, nb, nx, ne, res) {
	if
	:: pr[a] == op && ab[a] == ob && av[a] == ox && ep[a] == oe ->   /* MUTANT-6 */
		pr[a] = np;
		ep[a] = ne;
		if
		:: nb != ab[a] ->
			ab[a] = nb;
			av[a] = nx;
			accepted(r, a, nb, nx, ne)
		:: else
		fi;
		res = 1
	:: else -> res = 0
	fi
}

#define FORGET(i) kn = kn & ~BIT(i); vp[i] = 0; vb[i] = 0; vx[i] = 0; ve[i] = 0

/* the same connection moves the peer's learned ref forward to kc (the
 * newest value this proposer knows chosen), by CAS from what it holds */
inline learn(i) {
	if
	:: lr[A(r, i)] != kc && PREFIX(lr[A(r, i)], kc) ->
		lr[A(r, i)] = kc;
		readers_on(r, top[r], 0)
	:: else
	fi
}

/* plans */
#define P_NONE 0
#define P_CHOSEN 1
#define P_ACCEPT 2
#define P_PREPARE 3
#define P_GIVEUP 4
#define P_REFRESH 5

/* one push connection to peer i: its advertisement is read, and the
 * transition of this round is pushed when it is allowed on that state:
 * prepare(B) when p < B, accept(B, v) when p <= B (and not there yet);
 * never over a state of a newer epoch.  The CAS of a push delivered at
 * once is against the state just read; a late or repeated copy keeps the
 * state it was computed from, and takes only if that is still there.
 * Its answer is not used: whether it took is settled by reading. */
#define NEWER(x) ((x) > e)                                          /* MUTANT-13 */
#define MAYPREP(a) (!NEWER(ep[a]) && pr[a] < B)
#define MAYACC(a) (!NEWER(ep[a]) && pr[a] <= B && ab[a] != B)        /* MUTANT-1 */
#define MAY(k, a) ((k) == P_PREPARE -> MAYPREP(a) : MAYACC(a))
/* the new state: sp, sb, sx */
#define NEWSTATE(k, a) if \
	:: (k) == P_PREPARE -> sp = B; sb = ab[a]; sx = av[a] \
	:: else -> sp = NXT(B); sb = B; sx = v \
	fi
inline push(i, kind) {
	if
	:: d_step {
		if
		:: UP(r, i) && MAY(kind, A(r, i)) ->
			NEWSTATE(kind, A(r, i));
			apply(r, A(r, i), pr[A(r, i)], ab[A(r, i)], av[A(r, i)], ep[A(r, i)], sp, sb, sx, e, ok);
			learn(i);
			sp = 0; sb = 0; sx = 0; ok = 0
		:: else                 /* refused (down), or nothing to push */
		fi
	   }
	:: d_step {                 /* delayed: delivered later, or never */
			lates < MAXL && UP(r, i) && MAY(kind, A(r, i)) ->
			lates++;
			NEWSTATE(kind, A(r, i));
			lt[p] = 1; lta[p] = A(r, i);
			lto[p] = pr[A(r, i)]; ltob[p] = ab[A(r, i)]; ltox[p] = av[A(r, i)]; ltoe[p] = ep[A(r, i)];
			ltp[p] = sp; ltb[p] = sb; ltx[p] = sx; lte[p] = e;
			sp = 0; sb = 0; sx = 0
		}
	:: d_step {                 /* delivered, and repeated later */
			lates < MAXL && UP(r, i) && MAY(kind, A(r, i)) ->
			lates++;
			NEWSTATE(kind, A(r, i));
			lt[p] = 1; lta[p] = A(r, i);
			lto[p] = pr[A(r, i)]; ltob[p] = ab[A(r, i)]; ltox[p] = av[A(r, i)]; ltoe[p] = ep[A(r, i)];
			ltp[p] = sp; ltb[p] = sb; ltx[p] = sx; lte[p] = e;
			apply(r, A(r, i), pr[A(r, i)], ab[A(r, i)], av[A(r, i)], ep[A(r, i)], sp, sb, sx, e, ok);
			learn(i);
			sp = 0; sb = 0; sx = 0; ok = 0
		}
	fi
}

/* the change function: this proposer's transactions replayed onto w,
 * exactly once, in order; the records of T by role and stage */
inline change(w, v) {
	v = w;
	if
	:: role == W ->
		k = 0;
		do
		:: k < nw ->
			if
			:: !HAS(w, SLOT(mine, k)) -> v = APPEND(v, SLOT(mine, k))     /* MUTANT-5 */
			:: else
			fi;
			k++
		:: else -> break
		od;
		k = 0
	:: role == CO && stg == 1 ->
		if
		:: !HAS(w, TP) && !HAS(w, TR) -> v = APPEND(w, TP)
		:: else
		fi
	:: role == CO && stg == 2 ->
		if
		:: !HAS(w, TX) && !HAS(w, TD) -> v = APPEND(w, TD)                 /* MUTANT-10 */
		:: else
		fi
	:: role == AB && stg == 1 ->
		if
		:: !HAS(w, TD) && !HAS(w, TX) -> v = APPEND(w, TX)
		:: else
		fi
	:: role == AB && stg == 2 ->
		if
		:: HAS(w, TP) && !HAS(w, TR) -> v = APPEND(w, TR)
		:: else
		fi
	:: else                     /* a reader, the membership changer: identity */
	fi
}

/*
 * A proposer: p its ballot identity, mine its transactions (a value:
 * the order it writes them), nmine how many.  It writes the first at
 * once and the others at any later moment (a local write during a push).
 */
proctype proposer(byte p; byte role; byte mine; byte nmine)
{
	byte vp[NA], vb[NA], vx[NA], ve[NA];   /* views */
	byte kn;                /* bit i: the view of peer i is known */
	byte rb, rv, re;        /* the write-ahead record: ballot, value, epoch (durable) */
	bool rk;                /* the record is known chosen (durable: kc holds it) */
	byte kc;                /* the newest value known chosen (durable) */
	byte nw;                /* transactions written locally (durable) */
	byte e;                 /* the membership epoch it knows */
	byte r;                 /* the register it works on */
	byte stg;               /* the stage of its role */
	byte plan, B, v, w, hb, i, k, okm, pm, c;
	byte sp, sb, sx;        /* the state a push writes */
	byte sl;                /* a slow peer of this round, plus one */
	bool ok;

	atomic {
		nw = (nmine > 0 && role == W -> 1 : 0);
		stg = 1;
		r = (role == AB -> 1 : 0)
	}
#if CONF == 4
	if
	:: role == RC ->
		/* choose the joint value (MUTANT-12: the new one at once) */
		cfg = 1;                                    /* MUTANT-12 */
		e = cfg;
		/* then transfer the register (MUTANT-11: skip it) */
		c = 0;                                      /* MUTANT-11 */
		if
		:: c -> c = 0; goto final
		:: else
		fi
	:: role != RC -> e = cfg                    /* a stale writer: epoch 0 */
	fi;
#endif
#if CONF == 3
	/* the aborter: once T's pending revision is chosen in a (it met it,
	 * after its expiry), or never, if T ended first */
	if
	:: role == AB ->
		if
		:: atomic { HAS(top[0], TP) -> skip }
		:: atomic { ndone > 0 -> goto stop }
		fi
	:: else
	fi;
#endif

read:
	/* read every peer of the push set (the ref advertisements of this
	 * round's connections, and a fetch of what they name), or crash
	 * first, or write locally first */
	if
	:: crashes < MAXCR -> goto crash
	:: nw < nmine -> nw++; goto read                        /* a local write */
	:: skip
	/* or peer sl - 1 is slow this round (a fault): the round goes on
	 * without its answer, and its connection is given up (no push) */
	:: atomic { slows < MAXS -> slows++; sl = 1 }
	:: atomic { slows < MAXS -> slows++; sl = 2 }
	:: atomic { slows < MAXS -> slows++; sl = 3 }
#if NA == 4
	:: atomic { slows < MAXS -> slows++; sl = 4 }
#endif
	fi;
	atomic {
		i = 0;
		do
		:: i < NA ->
			if
			:: INSET(e, i) && UP(r, i) && sl != i + 1 ->
				vp[i] = pr[A(r, i)]; vb[i] = ab[A(r, i)]; vx[i] = av[A(r, i)];
				ve[i] = ep[A(r, i)]; kn = kn | BIT(i)
			:: else
			fi;
			i++
		:: else -> break
		od;
		i = 0
	}

#if CONF == 2
	/* the reader through the cluster: the highest accepted value among
	 * the answers, when a majority holds it; else complete the proposal */
	if
	:: role == RD && rb == 0 && stg == 1 ->
		d_step {
			stg = 2;
			hb = 0; w = 0; okm = 0; i = 0;
			do
			:: i < NA ->
				if
				:: (kn & BIT(i)) && vb[i] > hb -> hb = vb[i]; w = vx[i]
				:: else
				fi;
				i++
			:: else -> break
			od;
			i = 0;
			do
			:: i < NA ->
				if
				:: (kn & BIT(i)) && vb[i] == hb && vx[i] == w -> okm = okm | BIT(i)
				:: else
				fi;
				i++
			:: else -> break
			od;
			i = 0;
			if
			:: CHOSEN_BY(e, okm) ->                         /* MUTANT-8 */
				rdv[r] = w; readers_on(r, top[r], 0); plan = P_GIVEUP
			:: else
			fi;
			hb = 0; w = 0; okm = 0
		}
		if
		:: plan == P_GIVEUP -> plan = P_NONE; goto stop
		:: else
		fi
	:: else
	fi;
#endif

	/* decide, from the views, what to push */
decide:
	skip;
	d_step {
		plan = P_NONE;
		/* a newer membership epoch: refresh first */
		i = 0;
		do
		:: i < NA ->
			if
			:: (kn & BIT(i)) && NEWER(ve[i]) -> plan = P_REFRESH
			:: else
			fi;
			i++
		:: else -> break
		od;
		if
		:: plan == P_NONE ->
			/* is the recorded proposal accepted by a quorum? */
			okm = 0;
			i = 0;
			do
			:: i < NA ->
				if
				:: rb != 0 && (kn & BIT(i)) && vb[i] == rb && vx[i] == rv -> okm = okm | BIT(i)
				:: else
				fi;
				i++
			:: else -> break
			od;
			if
			:: rb != 0 && !rk && role == CO && stg == 1 && PEND_CHOSEN(re, okm) -> plan = P_CHOSEN
			:: rb != 0 && !rk && !(role == CO && stg == 1) && CHOSEN_BY(re, okm) -> plan = P_CHOSEN
			:: else ->
				/* the highest ballot of ours a quorum promised */
				B = 0;
				i = 0;
				do
				:: i < NA ->
					if
					:: (kn & BIT(i)) && vp[i] != 0 && PID(vp[i]) == p && vp[i] > B ->
						pm = 0;
						k = 0;
						do
						:: k < NA ->
							if
							:: (kn & BIT(k)) && vp[k] == vp[i] -> pm = pm | BIT(k)
							:: else
							fi;
							k++
						:: else -> break
						od;
						if
						:: QOK(e, pm) -> B = vp[i]
						:: else
						fi;
						pm = 0; k = 0
					:: else
					fi;
					i++
				:: else -> break
				od;
				if
				:: B != 0 && B == rb && re == e ->
					/* the recorded value, never recomputed (and never
					 * under another epoch: a ballot has one epoch) */
					plan = P_ACCEPT; v = rv
				:: B != 0 && B > rb ->
					/* the highest accepted value among the promises of B */
					plan = P_ACCEPT;
					hb = 0; w = 0;
					i = 0;
					do
					:: i < NA ->
						if
						:: (kn & BIT(i)) && vp[i] == B && vb[i] > hb -> hb = vb[i]; w = vx[i]
						:: else
						fi;
						i++
					:: else -> break
					od;
					/* (MUTANT-2: build on the value known chosen instead) */
					w = w;                                          /* MUTANT-2 */
					change(w, v);
					rb = B; rv = v; re = e; rk = 0;     /* the write-ahead record, before any accept */
					hb = 0; w = 0
				:: else ->
					/* prepare a new ballot above every one seen */
					plan = P_PREPARE;
					c = CNT(rb);
					i = 0;
					do
					:: i < NA ->
						if
						:: (kn & BIT(i)) && CNT(vp[i]) > c -> c = CNT(vp[i])
						:: else
						fi;
						i++
					:: else -> break
					od;
					B = BAL(c + 1, p);
					c = 0;
					if
					:: CNT(B) > MAXC -> plan = P_GIVEUP
					:: else
					fi
				fi
			fi;
			okm = 0
		:: else
		fi;
		/* the views served this round only */
		i = 0;
		do
		:: i < NA -> FORGET(i); i++
		:: else -> break
		od;
		i = 0
	}

	if
	:: plan == P_REFRESH -> atomic { e = cfg; sl = 0; plan = P_NONE; goto read }
	:: plan == P_GIVEUP -> goto stop
	:: plan == P_PREPARE ->
		i = 0;
		do
		:: i < NA ->
			if
			:: crashes < MAXCR -> goto crash
			:: INSET(e, i) && sl != i + 1 ->
				push(i, P_PREPARE); i++
			:: else -> i++
			fi
		:: else -> break
		od;
		atomic { i = 0; B = 0; v = 0; sl = 0; plan = P_NONE; goto read }
	:: plan == P_ACCEPT ->
		/* the pushes learn kc (MUTANT-4: the value being proposed) */
		kc = kc;                                                    /* MUTANT-4 */
		i = 0;
		do
		:: i < NA ->
			if
			:: crashes < MAXCR -> goto crash
			:: INSET(e, i) && sl != i + 1 ->
				push(i, P_ACCEPT); i++
			:: else -> i++
			fi
		:: else -> break
		od;
		atomic { i = 0; B = 0; v = 0; sl = 0; plan = P_NONE; goto read }
	:: plan == P_CHOSEN
	fi;

	/* the recorded value is chosen */
	d_step {
		plan = P_NONE; sl = 0; rk = 1;
		if
		:: PREFIX(kc, rv) -> kc = rv
		:: else
		fi;
		/* acknowledge: a writer's transactions, T's decision */
		if
		:: role == W || (role == CO && stg == 2 && HAS(rv, TD)) ->
			no_lost_ack = PREFIX(rv, top[r]);
			assert(no_lost_ack);
			if
			:: role == CO -> ack[r] = ack[r] | BIT(TD)
			:: else ->
				k = 0;
				do
				:: k < nw ->
					if
					:: HAS(rv, SLOT(mine, k)) -> ack[r] = ack[r] | BIT(SLOT(mine, k))
					:: else
					fi;
					k++
				:: else -> break
				od;
				k = 0
			fi
		:: else
		fi;
		if
		:: role == RD -> rdv[r] = rv; readers_on(r, top[r], 0)
		:: else
		fi
	}

	/* the final learn: every peer's learned ref moves forward to kc */
	d_step {
		i = 0;
		do
		:: i < NA ->
			if
			:: INSET(e, i) && UP(r, i) -> learn(i)
			:: else
			fi;
			i++
		:: else -> break
		od;
		i = 0
	}

	/* what next */
	if
	:: role == W ->
		atomic {
			k = 0;
			do
			:: k < nw && HAS(kc, SLOT(mine, k)) -> k++
			:: else -> break
			od;
			if
			:: k < nw -> k = 0; goto read               /* written meanwhile */
			:: k == nw && nw < nmine -> k = 0; nw++; goto read   /* the next write */
			:: else -> k = 0; goto stop
			fi
		}
	:: role == CO && stg == 1 ->
		if
		:: HAS(rv, TP) && !HAS(rv, TR) ->
			/* pended: decide on the primary */
			d_step {
				stg = 2; r = 1; rb = 0; rv = 0; re = 0; rk = 0; kc = 0;
				i = 0;
				do
				:: i < NA -> FORGET(i); i++
				:: else -> break
				od;
				i = 0
			}
			goto read
		:: else -> goto stop
		fi
	:: role == AB && stg == 1 ->
		if
		:: HAS(rv, TX) ->
			/* aborted: revert the pending revision */
			d_step {
				stg = 2; r = 0; rb = 0; rv = 0; re = 0; rk = 0; kc = 0;
				i = 0;
				do
				:: i < NA -> FORGET(i); i++
				:: else -> break
				od;
				i = 0
			}
			goto read
		:: else -> goto stop
		fi
	:: else
	fi;

final:
#if CONF == 4
	if
	:: role == RC ->
		/* the final value, after the transfer; then write t2 in it */
		d_step { cfg = 2; e = 2; role = W; nw = 1; plan = P_NONE; sl = 0 }
		goto read
	:: else
	fi;
#endif
	goto stop;

crash:
	skip;
	d_step {
		crashes++;
		i = 0;
		do
		:: i < NA -> FORGET(i); i++
		:: else -> break
		od;
		plan = P_NONE; B = 0; v = 0; w = 0; hb = 0; i = 0; k = 0; okm = 0; pm = 0; c = 0; ok = 0; sl = 0;
		/* the record survives (MUTANT-7: it is lost) */
		skip                                                       /* MUTANT-7 */
	}
	if
	:: goto read                        /* restarts */
	:: goto stop                        /* stays down: its writes stay local */
	fi;

stop:
	skip;
	d_step {
		i = 0;
		do
		:: i < NA -> FORGET(i); i++
		:: else -> break
		od;
		plan = P_NONE; B = 0; v = 0; w = 0; hb = 0; i = 0; k = 0; okm = 0; pm = 0; c = 0; ok = 0; sl = 0;
		ndone++
	}
}

/* late pushes arrive, once, at any time (never, if the run ends first) */
proctype network()
{
	bool ok;
	byte r;
end:
	do
	:: d_step { lt[0] && (!dn || lta[0] != DOWNA) ->
		r = lta[0] / NA;
		apply(r, lta[0], lto[0], ltob[0], ltox[0], ltoe[0], ltp[0], ltb[0], ltx[0], lte[0], ok);
		lt[0] = 0; lta[0] = 0; lto[0] = 0; ltob[0] = 0; ltox[0] = 0; ltoe[0] = 0; ltp[0] = 0; ltb[0] = 0; ltx[0] = 0; lte[0] = 0; ok = 0; r = 0 }
	:: d_step { lt[1] && (!dn || lta[1] != DOWNA) ->
		r = lta[1] / NA;
		apply(r, lta[1], lto[1], ltob[1], ltox[1], ltoe[1], ltp[1], ltb[1], ltx[1], lte[1], ok);
		lt[1] = 0; lta[1] = 0; lto[1] = 0; ltob[1] = 0; ltox[1] = 0; ltoe[1] = 0; ltp[1] = 0; ltb[1] = 0; ltx[1] = 0; lte[1] = 0; ok = 0; r = 0 }
#if NP == 3
	:: d_step { lt[2] && (!dn || lta[2] != DOWNA) ->
		r = lta[2] / NA;
		apply(r, lta[2], lto[2], ltob[2], ltox[2], ltoe[2], ltp[2], ltb[2], ltx[2], lte[2], ok);
		lt[2] = 0; lta[2] = 0; lto[2] = 0; ltob[2] = 0; ltox[2] = 0; ltoe[2] = 0; ltp[2] = 0; ltb[2] = 0; ltx[2] = 0; lte[2] = 0; ok = 0; r = 0 }
#endif
	od
}

/* peer DOWNA goes down once, at any time, and may come back */
proctype operator()
{
end:
	do
	:: atomic { !dn && DOWNA != 255 && !downs -> dn = 1; downs = 1 }
	:: atomic { dn -> dn = 0 }
	od
}

/* the end: every proposer stopped; what is chosen holds every ack, the
 * learned refs and the reader's value are prefixes of it */
proctype the_end()
{
	byte r;
	ndone == NPROC;
	d_step {
		r = 0;
		do
		:: r < NR ->
			no_lost_ack = (!(ack[r] & BIT(1)) || HAS(top[r], 1)) && (!(ack[r] & BIT(2)) || HAS(top[r], 2)) &&
				      (!(ack[r] & BIT(3)) || HAS(top[r], 3));
			assert(no_lost_ack);
			readers_on(r, top[r], 1);
			r++
		:: else -> break
		od;
		r = 0
	}
}

init {
	atomic {
		run network();
		run the_end();
#if CONF == 1 || CONF == 4
		if
		:: DOWNA != 255 -> run operator()
		:: else
		fi;
#endif
#if CONF == 1
		run proposer(0, W, 1 | (2 << 2), 2);   /* t1, then t2 */
		run proposer(1, W, 3, 1)               /* t3 */
#elif CONF == 2
		run proposer(0, W, 1, 1);              /* t1 */
		run proposer(1, W, 2, 1);              /* t2 */
		run proposer(2, RD, 0, 0)              /* a reader through the cluster */
#elif CONF == 3
		run proposer(0, CO, 0, 0);             /* T's coordinator */
		run proposer(1, AB, 0, 0)              /* an aborter of T */
#elif CONF == 4
		run proposer(1, W, 1, 1);              /* t1, from epoch 0 */
		run proposer(0, RC, 2, 1)              /* the change, then t2 in the new epoch */
#endif
	}
}
