/* acceptor.h - (library-private: included by the files of lib/sync/ and
 * the unit tests only) the state of one quorum register at one peer, as
 * docs/quorum.md ("The acceptor state") defines it: ballots, the
 * deterministic state commit, its parsing, and the two transitions.
 *
 * Nothing here touches a repository: a state is encoded to the bytes of
 * a git commit object (and so to its object ID) and decoded from them.
 * A decoded state is accepted only when encoding its fields gives back
 * exactly the same bytes, which refuses any commit the protocol did not
 * write. */
#ifndef OPT_SYNC_ACCEPTOR_H
#define OPT_SYNC_ACCEPTOR_H

#include <stddef.h>
#include <stdint.h>

#define OPT_HEX_OID 40        /* a git object ID in hex */
#define OPT_BALLOT_ID_HEX 64  /* a proposer: its Ed25519 public key in hex */
#define OPT_ACCEPTOR_REG_MAX 4200

/* A ballot (n, id): n == 0 is "none" (and id is then empty). Ballots
 * compare by n, then by id as a string. */
struct opt_ballot {
	uint64_t n;
	char id[OPT_BALLOT_ID_HEX + 1];
};

/* <0, 0 or >0 as a is below, equal to or above b. */
int opt_ballot_cmp(const struct opt_ballot *a, const struct opt_ballot *b);

/* The same proposer's next ballot: (n+1, id). OPT_EINVAL when n would
 * overflow or b is none. */
int opt_ballot_next(struct opt_ballot *out, const struct opt_ballot *b);

/* Writes "n.id" (n in decimal, no leading zeros) into buf of size
 * OPT_BALLOT_TEXT; "0" for none. */
#define OPT_BALLOT_TEXT (20 + 1 + OPT_BALLOT_ID_HEX + 1)
void opt_ballot_format(char buf[OPT_BALLOT_TEXT], const struct opt_ballot *b);

/* Parses the len bytes at s as "n.id" (n >= 1, no leading zeros, id 64
 * lowercase hex digits). OPT_EINVAL, with the reason set, otherwise. */
int opt_ballot_parse(struct opt_ballot *out, const char *s, size_t len);

/* One state of the register reg ("collections/C" or "members") at one
 * peer. prev is the state it replaces ("" in the first), value the
 * accepted collection commit ("" while nothing is accepted). A tombstone
 * (retired) has no parents, no promise and no accepted ballot. */
struct opt_acceptor_state {
	char reg[OPT_ACCEPTOR_REG_MAX];
	char prev[OPT_HEX_OID + 1];
	uint64_t epoch;
	struct opt_ballot promise;
	struct opt_ballot accepted;
	char value[OPT_HEX_OID + 1];
	int retired;
};

/* The initial state of reg (no ref at the peer): nothing promised or
 * accepted, epoch 0. */
void opt_acceptor_initial(struct opt_acceptor_state *out, const char *reg);

/* Encodes s as the body of a git commit object (what follows the
 * "commit <size>\0" header): *out malloc'd, *len its length. OPT_EINVAL
 * when s breaks the invariant (a < p, or a = p = 0; a value exactly when
 * something is accepted). */
int opt_acceptor_encode(char **out, size_t *len, const struct opt_acceptor_state *s);

/* The object ID of s's commit, in hex. */
int opt_acceptor_oid(char out[OPT_HEX_OID + 1], const struct opt_acceptor_state *s);

/* Decodes the commit body at buf (len bytes), read from the ref of
 * register reg. OPT_EINTEGRITY, naming what is wrong, when it is not a
 * state the protocol writes for reg (any byte that differs from the
 * encoding of its own fields counts). */
int opt_acceptor_decode(struct opt_acceptor_state *out, const char *reg,
			const char *buf, size_t len);

/* prepare(b) from cur, whose commit is cur_oid ("" for the initial
 * state): allowed when cur's promise is below b. OPT_ECONFLICT when it
 * is not (or cur is a tombstone). */
int opt_acceptor_prepare(struct opt_acceptor_state *out, const struct opt_acceptor_state *cur,
			 const char *cur_oid, const struct opt_ballot *b, uint64_t epoch);

/* accept(b, value) from cur: allowed when cur's promise is at most b;
 * the new state promises next(b). OPT_ECONFLICT when not allowed. */
int opt_acceptor_accept(struct opt_acceptor_state *out, const struct opt_acceptor_state *cur,
			const char *cur_oid, const struct opt_ballot *b, const char *value,
			uint64_t epoch);

#endif
