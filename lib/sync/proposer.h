/* proposer.h - (library-private: included by the files of lib/sync/ and
 * the unit tests only) what a proposer of a quorum register does next,
 * decided from what it knows: the views of the peers it read, its
 * write-ahead record, and the quorums of its membership epoch. Steps 1 to
 * 4 of "One proposal" in docs/quorum.md, as the model docs/quorum.pml
 * decides them; pure: it reads no peer and writes nothing. */
#ifndef OPT_SYNC_PROPOSER_H
#define OPT_SYNC_PROPOSER_H

#include "acceptor.h"

#include <stdint.h>

#define OPT_QUORUM_PEERS 32

/* The peers of a register under one membership value, as bit sets over
 * the proposer's list of peers: a quorum is a majority of old, and, when
 * the value is joint, a majority of new as well. */
struct opt_quorum {
	uint32_t old;
	uint32_t new;   /* 0: not joint */
};

/* Is the set of peers answered a quorum of q? */
int opt_quorum_ok(const struct opt_quorum *q, uint32_t answered);

/* The peers a round pushes to: old and new together. */
uint32_t opt_quorum_peers(const struct opt_quorum *q);

/* What the proposer last read of one peer's acceptor state. */
struct opt_view {
	int known;                         /* read this round (else: unknown) */
	struct opt_acceptor_state st;
	char oid[OPT_HEX_OID + 1];         /* the state's commit; "" when none */
};

/* The write-ahead record: the ballot, value and epoch of the last accept
 * this proposer sent (b.n == 0: none); settled once the value is known
 * chosen. */
struct opt_record {
	struct opt_ballot b;
	char value[OPT_HEX_OID + 1];
	uint64_t epoch;
	int settled;
};

enum opt_plan_kind {
	OPT_PLAN_REFRESH = 1,  /* a peer shows a newer membership epoch */
	OPT_PLAN_CHOSEN,       /* the recorded value is chosen: settle it */
	OPT_PLAN_ACCEPT,       /* push accept(b, value): the recorded value */
	OPT_PLAN_PROPOSE,      /* compute value = change(base), record (b,
				* value) durably, then push accept(b, value) */
	OPT_PLAN_PREPARE,      /* push prepare(b) */
};

struct opt_plan {
	enum opt_plan_kind kind;
	struct opt_ballot b;
	char value[OPT_HEX_OID + 1];   /* CHOSEN, ACCEPT: the value */
	char base[OPT_HEX_OID + 1];    /* PROPOSE: w ("" when nothing was
					* ever accepted: the initial value) */
	uint32_t to;                   /* ACCEPT, PREPARE: the peers whose
					* view allows the transition */
};

/* Decides the next step of the proposer me (its ballot identity) with
 * membership epoch epoch, whose quorums are q (rq: the quorums of the
 * record's epoch), from the n views (n <= OPT_QUORUM_PEERS, indexed as
 * the bit sets of q) and its record rec. OPT_EINVAL on bad arguments;
 * OPT_EIO when the ballot counter is exhausted. */
int opt_proposer_decide(struct opt_plan *out, const struct opt_view *views, size_t n,
			const struct opt_quorum *q, const struct opt_quorum *rq, uint64_t epoch,
			const struct opt_record *rec, const char *me);

#endif
