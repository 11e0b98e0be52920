/* test-proposer.c - the proposer's decisions (lib/sync/proposer.c), in
 * the cases docs/quorum.md names, and in random runs of 3 and 5
 * in-memory acceptors (each a compare-and-swap register holding the
 * state commits of lib/sync/acceptor.c) with 2 or 3 proposers that crash,
 * lose pushes, and have pushes delivered late or twice. The runs check
 * what docs/quorum.pml checks: chosen values form one chain, a ballot
 * has one value, no transaction is in a value twice, and no acknowledged
 * transaction is lost. */
#include "harness.h"
#include "error.h"
#include "util.h"
#include "sync/acceptor.h"
#include "sync/proposer.h"

#define KEY(c) { c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, \
		 c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, 0 }
static const char key_a[65] = KEY('a'), key_b[65] = KEY('b'), key_c[65] = KEY('c');
#define V1 "1111111111111111111111111111111111111111"
#define V2 "2222222222222222222222222222222222222222"

static struct opt_ballot ballot(uint64_t n, const char *id)
{
	struct opt_ballot b;

	memset(&b, 0, sizeof(b));
	b.n = n;
	snprintf(b.id, sizeof(b.id), "%s", id);
	return b;
}

static void view_set(struct opt_view *v, uint64_t p, const char *pid, uint64_t a, const char *aid,
		     const char *value)
{
	memset(v, 0, sizeof(*v));
	v->known = 1;
	opt_acceptor_initial(&v->st, "collections/t");
	v->st.promise = ballot(p, pid);
	v->st.accepted = ballot(a, aid);
	snprintf(v->st.value, sizeof(v->st.value), "%s", value);
	if (p)
		opt_acceptor_oid(v->oid, &v->st);
}

TEST(quorums)
{
	struct opt_quorum q3 = { 7, 0 }, joint = { 7, 14 }, q5 = { 31, 0 };

	CHECK(opt_quorum_ok(&q3, 3) && opt_quorum_ok(&q3, 5) && !opt_quorum_ok(&q3, 1) && !opt_quorum_ok(&q3, 8 | 1));
	CHECK(opt_quorum_ok(&q5, 7) && !opt_quorum_ok(&q5, 3) && opt_quorum_ok(&q5, 16 | 8 | 1));
	/* joint: a majority of {0,1,2} and of {1,2,3} */
	CHECK(opt_quorum_ok(&joint, 6) && !opt_quorum_ok(&joint, 3) && !opt_quorum_ok(&joint, 12) && opt_quorum_ok(&joint, 5 | 8));
	CHECK(opt_quorum_peers(&joint) == 15);
}

/* the cases of "One proposal", one each */
TEST(decisions)
{
	struct opt_view v[3];
	struct opt_quorum q = { 7, 0 };
	struct opt_record rec;
	struct opt_plan p;

	/* nothing anywhere: prepare (1, me) on all three */
	memset(&rec, 0, sizeof(rec));
	view_set(&v[0], 0, "", 0, "", "");
	view_set(&v[1], 0, "", 0, "", "");
	view_set(&v[2], 0, "", 0, "", "");
	CHECK_RC(opt_proposer_decide(&p, v, 3, &q, &q, 0, &rec, key_a));
	CHECK(p.kind == OPT_PLAN_PREPARE && p.b.n == 1 && !strcmp(p.b.id, key_a) && p.to == 7);
	/* two promised (1, a): propose on the initial value, to all three */
	view_set(&v[0], 1, key_a, 0, "", "");
	view_set(&v[1], 1, key_a, 0, "", "");
	CHECK_RC(opt_proposer_decide(&p, v, 3, &q, &q, 0, &rec, key_a));
	CHECK(p.kind == OPT_PLAN_PROPOSE && p.b.n == 1 && !p.base[0] && p.to == 7);
	/* the third promised (3, b) meanwhile: accept goes to the two only */
	view_set(&v[2], 3, key_b, 2, key_b, V2);
	CHECK_RC(opt_proposer_decide(&p, v, 3, &q, &q, 0, &rec, key_a));
	CHECK(p.kind == OPT_PLAN_PROPOSE && p.b.n == 1 && p.to == 3);
	/* promises of (4, a), one of them over (2, b)'s accepted V2: that
	 * is the value to build on */
	view_set(&v[0], 4, key_a, 2, key_b, V2);
	view_set(&v[1], 4, key_a, 0, "", "");
	CHECK_RC(opt_proposer_decide(&p, v, 3, &q, &q, 0, &rec, key_a));
	CHECK(p.kind == OPT_PLAN_PROPOSE && p.b.n == 4 && !strcmp(p.base, V2));
	/* steady state: our last accept (4, a) set promise (5, a) on two */
	rec.b = ballot(4, key_a);
	memcpy(rec.value, V1, sizeof(rec.value));
	view_set(&v[0], 5, key_a, 4, key_a, V1);
	view_set(&v[1], 5, key_a, 4, key_a, V1);
	view_set(&v[2], 3, key_b, 2, key_b, V2);
	CHECK_RC(opt_proposer_decide(&p, v, 3, &q, &q, 0, &rec, key_a));
	CHECK(p.kind == OPT_PLAN_CHOSEN && !strcmp(p.value, V1));
	rec.settled = 1;
	CHECK_RC(opt_proposer_decide(&p, v, 3, &q, &q, 0, &rec, key_a));
	CHECK(p.kind == OPT_PLAN_PROPOSE && p.b.n == 5 && !strcmp(p.base, V1) && p.to == 7);
	/* a half-done accept at the recorded ballot: the recorded value again */
	rec.b = ballot(5, key_a);
	rec.settled = 0;
	memcpy(rec.value, V2, sizeof(rec.value));
	CHECK_RC(opt_proposer_decide(&p, v, 3, &q, &q, 0, &rec, key_a));
	CHECK(p.kind == OPT_PLAN_ACCEPT && p.b.n == 5 && !strcmp(p.value, V2));
	/* ... but never under another epoch: prepare above */
	rec.epoch = 1;
	CHECK_RC(opt_proposer_decide(&p, v, 3, &q, &q, 2, &rec, key_a));
	CHECK(p.kind == OPT_PLAN_PREPARE && p.b.n == 6);
	/* a state of a newer epoch: refresh the membership first */
	v[2].st.epoch = 3;
	CHECK_RC(opt_proposer_decide(&p, v, 3, &q, &q, 2, &rec, key_a));
	CHECK(p.kind == OPT_PLAN_REFRESH);
	/* another proposer holds the promise of a majority: prepare above */
	memset(&rec, 0, sizeof(rec));
	view_set(&v[0], 8, key_b, 7, key_b, V1);
	view_set(&v[1], 8, key_b, 7, key_b, V1);
	v[2].known = 0;
	CHECK_RC(opt_proposer_decide(&p, v, 3, &q, &q, 0, &rec, key_a));
	CHECK(p.kind == OPT_PLAN_PREPARE && p.b.n == 9 && p.to == 3);
	CHECK(opt_proposer_decide(&p, v, 3, &q, &q, 0, &rec, "short") == OPT_EINVAL);
}

/* ---- random runs ---- */

#define MAXA 5
#define MAXP 3
#define MAXV 4096
#define MAXLATE 8

static char vals[MAXV][16];    /* value i: a string of transaction letters */
static int nvals;

static void val_oid(char out[OPT_HEX_OID + 1], int i)
{
	snprintf(out, OPT_HEX_OID + 1, "%040x", (unsigned)i + 1);
}

static const char *val_of(const char *oid)
{
	unsigned long i;

	if (!oid[0])
		return "";
	i = strtoul(oid, NULL, 16);
	return i >= 1 && i <= (unsigned long)nvals ? vals[i - 1] : "?";
}

static int val_new(char out[OPT_HEX_OID + 1], const char *s)
{
	if (nvals == MAXV)
		return -1;
	snprintf(vals[nvals], sizeof(vals[nvals]), "%s", s);
	val_oid(out, nvals++);
	return 0;
}

static int prefix(const char *u, const char *v)
{
	return !strncmp(u, v, strlen(u));
}

struct acc {
	struct opt_acceptor_state st;
	char oid[OPT_HEX_OID + 1];
	int down;
	/* ghost: the ballots it ever accepted */
	struct opt_ballot hist[64];
	int nhist;
};

struct late {
	int a;
	char old[OPT_HEX_OID + 1];
	struct opt_acceptor_state st;
};

struct prop {
	const char *me;
	const char *txns;       /* what it writes, in order */
	int nw;                 /* how many written locally so far */
	struct opt_view v[MAXA];
	struct opt_record rec;
	char kc[16];            /* the newest value known chosen */
	int done;
	char acked[16];
};

struct run {
	int na, np, crashes, steps;
	struct acc a[MAXA];
	struct prop p[MAXP];
	struct late late[MAXLATE];
	int nlate;
	/* ghost: chosen ballots and their values */
	struct opt_ballot chb[256];
	char chv[256][16];
	int nch;
	char top[16];
	int violations;
	char why[200];
};

static void violation(struct run *r, const char *why)
{
	if (!r->violations++)
		snprintf(r->why, sizeof(r->why), "%s", why);
}

static int has(const char *v, char t)
{
	return strchr(v, t) != NULL;
}

/* acceptor a took accepted ballot b with value x: the checks when b
 * reaches a majority */
static void ghost_accepted(struct run *r, int a, const struct opt_ballot *b, const char *x)
{
	struct opt_quorum q = { (UINT32_C(1) << r->na) - 1, 0 };
	uint32_t m = 0;
	int i, j;

	r->a[a].hist[r->a[a].nhist++ % 64] = *b;
	for (i = 0; i < r->nch; i++)
		if (!opt_ballot_cmp(&r->chb[i], b)) {
			if (strcmp(r->chv[i], x))
				violation(r, "a ballot with two values");
			return;
		}
	for (i = 0; i < r->na; i++)
		for (j = 0; j < r->a[i].nhist && j < 64; j++)
			if (!opt_ballot_cmp(&r->a[i].hist[j], b))
				m |= UINT32_C(1) << i;
	if (!opt_quorum_ok(&q, m) || r->nch == 256)
		return;
	for (i = 0; i < r->nch; i++)
		if (!prefix(r->chv[i], x) && !prefix(x, r->chv[i]))
			violation(r, "two chosen values off one chain");
	for (i = 0; x[i]; i++)
		if (strchr(x + i + 1, x[i]))
			violation(r, "a transaction twice in a chosen value");
	r->chb[r->nch] = *b;
	snprintf(r->chv[r->nch++], 16, "%s", x);
	if (strlen(x) > strlen(r->top))
		snprintf(r->top, sizeof(r->top), "%s", x);
}

/* the CAS of acceptor a's ref from old to the state st */
static void cas(struct run *r, int a, const char *old, const struct opt_acceptor_state *st)
{
	struct acc *ac = &r->a[a];
	char oid[OPT_HEX_OID + 1];

	if (ac->down || strcmp(ac->oid, old) || opt_acceptor_oid(oid, st) < 0)
		return;
	if (opt_ballot_cmp(&st->accepted, &ac->st.accepted))
		ghost_accepted(r, a, &st->accepted, val_of(st->value));
	ac->st = *st;
	memcpy(ac->oid, oid, sizeof(oid));
}

static void forget(struct prop *p, int na)
{
	int i;

	for (i = 0; i < na; i++)
		p->v[i].known = 0;
}

/* one round of proposer i: read, decide, push */
static void round_of(struct run *r, int i)
{
	struct prop *p = &r->p[i];
	struct opt_quorum q = { (UINT32_C(1) << r->na) - 1, 0 };
	struct opt_plan plan;
	int k;

	if (p->nw < (int)strlen(p->txns) && opt_random(3) == 0)
		p->nw++;                               /* a local write meanwhile */
	for (k = 0; k < r->na; k++)                    /* read (a peer may be slow) */
		if (!r->a[k].down && opt_random(6)) {
			p->v[k].known = 1;
			p->v[k].st = r->a[k].st;
			memcpy(p->v[k].oid, r->a[k].oid, sizeof(p->v[k].oid));
		}
	if (opt_proposer_decide(&plan, p->v, (size_t)r->na, &q, &q, 0, &p->rec, p->me) < 0) {
		violation(r, opt_error_last());
		return;
	}
	if (plan.kind == OPT_PLAN_CHOSEN) {
		/* the decision must be true: the ghost saw it chosen */
		int c, seen = 0;
		for (c = 0; c < r->nch; c++)
			seen |= !opt_ballot_cmp(&r->chb[c], &plan.b);
		if (!seen)
			violation(r, "a value taken as chosen that no majority accepted");
		p->rec.settled = 1;
		if (prefix(p->kc, val_of(plan.value)))
			snprintf(p->kc, sizeof(p->kc), "%s", val_of(plan.value));
		for (k = 0; k < p->nw; k++)
			if (has(p->kc, p->txns[k]) && !has(p->acked, p->txns[k]))
				strncat(p->acked, &p->txns[k], 1);
		for (k = 0; k < p->nw && has(p->kc, p->txns[k]); k++)
			;
		if (k == (int)strlen(p->txns))
			p->done = 1;
		forget(p, r->na);
		return;
	}
	if (plan.kind == OPT_PLAN_PROPOSE) {
		/* change(w): w plus our written transactions not in it */
		char v[16];
		snprintf(v, sizeof(v), "%s", val_of(plan.base));
		for (k = 0; k < p->nw; k++)
			if (!has(v, p->txns[k]))
				strncat(v, &p->txns[k], 1);
		if (val_new(plan.value, v) < 0)
			return;
		p->rec.b = plan.b;
		p->rec.epoch = 0;
		p->rec.settled = 0;
		memcpy(p->rec.value, plan.value, sizeof(p->rec.value));
		plan.kind = OPT_PLAN_ACCEPT;
	}
	for (k = 0; k < r->na; k++) {
		struct opt_acceptor_state st;
		int how = (int)opt_random(10), rc;

		if (!(plan.to & (UINT32_C(1) << k)))
			continue;
		if (r->crashes < 3 && opt_random(40) == 0) {   /* crash mid-round */
			r->crashes++;
			break;
		}
		rc = plan.kind == OPT_PLAN_ACCEPT ?
			opt_acceptor_accept(&st, &p->v[k].st, p->v[k].oid, &plan.b, plan.value, 0) :
			opt_acceptor_prepare(&st, &p->v[k].st, p->v[k].oid, &plan.b, 0);
		if (rc < 0) {
			violation(r, "decide planned a transition its view refuses");
			continue;
		}
		if (how == 0)
			continue;                              /* lost */
		if (how <= 2 && r->nlate < MAXLATE) {          /* late, or late again */
			struct late *l = &r->late[r->nlate++];
			l->a = k;
			memcpy(l->old, p->v[k].oid, sizeof(l->old));
			l->st = st;
			if (how == 1)
				continue;
		}
		cas(r, k, p->v[k].oid, &st);
	}
	forget(p, r->na);
}

static void one_run(struct run *r, int na, int np)
{
	static const char *const keys[] = { key_a, key_b, key_c };
	static const char *const txns[] = { "ab", "c", "de" };
	int i, k, live;

	memset(r, 0, sizeof(*r));
	nvals = 0;
	r->na = na;
	r->np = np;
	for (i = 0; i < na; i++)
		opt_acceptor_initial(&r->a[i].st, "collections/t");
	for (i = 0; i < np; i++) {
		r->p[i].me = keys[i];
		r->p[i].txns = txns[i];
		r->p[i].nw = 1;
	}
	for (r->steps = 0; r->steps < 400 && !r->violations; r->steps++) {
		int what = (int)opt_random(12);
		if (what == 0 && r->nlate) {               /* a late push arrives */
			struct late l = r->late[k = (int)opt_random((uint32_t)r->nlate)];
			r->late[k] = r->late[--r->nlate];
			cas(r, l.a, l.old, &l.st);
			continue;
		}
		if (what == 1) {                           /* a peer goes down, or up */
			k = (int)opt_random((uint32_t)na);
			int down = 0;
			for (i = 0; i < na; i++)
				down += r->a[i].down;
			if (r->a[k].down || down < (na - 1) / 2)
				r->a[k].down = !r->a[k].down;
			continue;
		}
		for (live = 0, i = 0; i < np; i++)
			live += !r->p[i].done;
		if (!live)
			break;
		do
			i = (int)opt_random((uint32_t)np);
		while (r->p[i].done);
		if (what == 2 && r->crashes < 3) {         /* a crash: views lost, record kept */
			r->crashes++;
			forget(&r->p[i], na);
			continue;
		}
		round_of(r, i);
	}
	/* no acknowledged transaction lost: each is in the top chosen value */
	for (i = 0; i < np; i++)
		for (k = 0; r->p[i].acked[k]; k++)
			if (!has(r->top, r->p[i].acked[k]))
				violation(r, "an acknowledged transaction is not chosen");
}

static void runs(int na, int np, int count)
{
	static struct run r;
	int i, finished = 0, chosen = 0, fails = 0;

	for (i = 0; i < count; i++) {
		int k, all = 1;
		one_run(&r, na, np);
		for (k = 0; k < np; k++)
			all &= r.p[k].done;
		finished += all;
		chosen += r.nch;
		if (r.violations) {
			if (!fails++)
				printf("# run %d of %d acceptors, %d proposers: %s\n", i, na, np, r.why);
		}
	}
	printf("# %d acceptors, %d proposers: %d runs, %d with every write chosen, %d ballots chosen, %d runs with a violation\n",
	       na, np, count, finished, chosen, fails);
	CHECK(fails == 0);
	CHECK(finished > count / 4);   /* the runs do get somewhere */
}

TEST(random_runs_3)
{
	runs(3, 2, 3000);
	runs(3, 3, 3000);
}

TEST(random_runs_5)
{
	runs(5, 3, 2000);
}

int main(void)
{
	opt_util_init();
	RUN(quorums);
	RUN(decisions);
	RUN(random_runs_3);
	RUN(random_runs_5);
	return DONE();
}
