/* proposer.c - what a proposer of a quorum register does next (steps 1
 * to 4 of "One proposal", docs/quorum.md; the decide step of
 * docs/quorum.pml). */
#include "proposer.h"
#include "error.h"

#include <string.h>

static unsigned popcount(uint32_t m)
{
	unsigned c = 0;

	for (; m; m &= m - 1)
		c++;
	return c;
}

static int majority(uint32_t set, uint32_t answered)
{
	return popcount(set & answered) * 2 > popcount(set);
}

int opt_quorum_ok(const struct opt_quorum *q, uint32_t answered)
{
	return q->old && majority(q->old, answered) && (!q->new || majority(q->new, answered));
}

uint32_t opt_quorum_peers(const struct opt_quorum *q)
{
	return q->old | q->new;
}

/* the known views among the peers of q, as a bit set */
static uint32_t known_in(const struct opt_view *views, size_t n, const struct opt_quorum *q)
{
	uint32_t m = 0, in = opt_quorum_peers(q);
	size_t i;

	for (i = 0; i < n; i++)
		if (views[i].known && (in & (UINT32_C(1) << i)))
			m |= UINT32_C(1) << i;
	return m;
}

/* The highest ballot of ours that a quorum of the known views has as
 * its promise (n == 0: none). */
static struct opt_ballot promised_to_me(const struct opt_view *views, size_t n, uint32_t kn,
					const struct opt_quorum *q, const char *me)
{
	struct opt_ballot best;
	size_t i, k;

	memset(&best, 0, sizeof(best));
	for (i = 0; i < n; i++) {
		const struct opt_ballot *p = &views[i].st.promise;
		uint32_t pm = 0;

		if (!(kn & (UINT32_C(1) << i)) || p->n == 0 || strcmp(p->id, me) ||
		    opt_ballot_cmp(p, &best) <= 0)
			continue;
		for (k = 0; k < n; k++)
			if ((kn & (UINT32_C(1) << k)) && !opt_ballot_cmp(&views[k].st.promise, p))
				pm |= UINT32_C(1) << k;
		if (opt_quorum_ok(q, pm))
			best = *p;
	}
	return best;
}

/* The peers whose view allows prepare(b) (accept: accept(b)) */
static uint32_t allowed(const struct opt_view *views, size_t n, uint32_t kn, uint64_t epoch,
			const struct opt_ballot *b, int accept)
{
	uint32_t m = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		const struct opt_acceptor_state *s = &views[i].st;
		int c = opt_ballot_cmp(&s->promise, b);

		if (!(kn & (UINT32_C(1) << i)) || s->retired || s->epoch > epoch)
			continue;
		if (accept ? c <= 0 && opt_ballot_cmp(&s->accepted, b) != 0 : c < 0)
			m |= UINT32_C(1) << i;
	}
	return m;
}

/* Step 1: the record accepted by a quorum of its epoch is chosen */
static int record_chosen(const struct opt_view *views, size_t n, uint32_t kn,
			 const struct opt_quorum *rq, const struct opt_record *rec)
{
	uint32_t okm = 0;
	size_t i;

	if (rec->b.n == 0 || rec->settled)
		return 0;
	for (i = 0; i < n; i++)
		if ((kn & (UINT32_C(1) << i)) && !opt_ballot_cmp(&views[i].st.accepted, &rec->b) &&
		    !strcmp(views[i].st.value, rec->value))
			okm |= UINT32_C(1) << i;
	return opt_quorum_ok(rq, okm);
}

/* Step 3: the value of the highest accepted ballot among the views that
 * promised b (those are the prepare answers for b) */
static void base_value(char out[OPT_HEX_OID + 1], const struct opt_view *views, size_t n,
		       uint32_t kn, const struct opt_ballot *b)
{
	struct opt_ballot hb;
	size_t i;

	memset(&hb, 0, sizeof(hb));
	out[0] = '\0';
	for (i = 0; i < n; i++) {
		const struct opt_acceptor_state *s = &views[i].st;

		if ((kn & (UINT32_C(1) << i)) && !opt_ballot_cmp(&s->promise, b) &&
		    opt_ballot_cmp(&s->accepted, &hb) > 0) {
			hb = s->accepted;
			memcpy(out, s->value, OPT_HEX_OID + 1);
		}
	}
}

/* Step 2, otherwise: a new ballot above every counter seen */
static int new_ballot(struct opt_ballot *out, const struct opt_view *views, size_t n, uint32_t kn,
		      const struct opt_record *rec, const char *me)
{
	uint64_t c = rec->b.n;
	size_t i;

	for (i = 0; i < n; i++)
		if ((kn & (UINT32_C(1) << i)) && views[i].st.promise.n > c)
			c = views[i].st.promise.n;
	if (c >= UINT64_MAX - 1)
		return opt_error_set(OPT_EIO, "the ballot counter is exhausted");
	memset(out, 0, sizeof(*out));
	out->n = c + 1;
	memcpy(out->id, me, OPT_BALLOT_ID_HEX + 1);
	return 0;
}

int opt_proposer_decide(struct opt_plan *out, const struct opt_view *views, size_t n,
			const struct opt_quorum *q, const struct opt_quorum *rq, uint64_t epoch,
			const struct opt_record *rec, const char *me)
{
	uint32_t kn;
	struct opt_ballot b;
	size_t i;

	memset(out, 0, sizeof(*out));
	if (n > OPT_QUORUM_PEERS || strlen(me) != OPT_BALLOT_ID_HEX || !q->old)
		return opt_error_set(OPT_EINVAL, "a proposer needs its identity and its peers");
	kn = known_in(views, n, q) | known_in(views, n, rq);
	for (i = 0; i < n; i++)
		if ((kn & (UINT32_C(1) << i)) && views[i].st.epoch > epoch) {
			out->kind = OPT_PLAN_REFRESH;
			return 0;
		}
	if (record_chosen(views, n, kn, rq, rec)) {
		out->kind = OPT_PLAN_CHOSEN;
		out->b = rec->b;
		memcpy(out->value, rec->value, sizeof(out->value));
		return 0;
	}
	kn = known_in(views, n, q);
	b = promised_to_me(views, n, kn, q, me);
	if (b.n && !opt_ballot_cmp(&b, &rec->b) && rec->epoch == epoch) {
		/* the proposal at b may be half done: the recorded value,
		 * re-sent, never recomputed */
		out->kind = OPT_PLAN_ACCEPT;
		memcpy(out->value, rec->value, sizeof(out->value));
	} else if (b.n && opt_ballot_cmp(&b, &rec->b) > 0) {
		/* the steady state: one round */
		out->kind = OPT_PLAN_PROPOSE;
		base_value(out->base, views, n, kn, &b);
	} else {
		int rc = new_ballot(&b, views, n, kn, rec, me);
		if (rc < 0)
			return rc;
		out->kind = OPT_PLAN_PREPARE;
		out->b = b;
		out->to = allowed(views, n, kn, epoch, &b, 0);
		return 0;
	}
	out->b = b;
	out->to = allowed(views, n, kn, epoch, &b, 1);
	return 0;
}
