/* quorum.c - quorum writes (docs/quorum.md, "The proposer"): one proposal
 * per collection over the peers of its placement.  The views (what each
 * peer's acceptor ref held when last seen) are tracking refs; each round
 * pushes the transition computed from a view, with that view's OID as the
 * expected old value, to every peer at once (one child process per peer),
 * and goes on at the first majority.  What this store writes: its
 * write-ahead record (the proposal ref), the chosen ref, its views (a
 * tracking ref per peer) and, through the change function, its
 * collection's head. */
#include "internal.h"
#include "acceptor.h"
#include "proposer.h"
#include "error.h"
#include "identity.h"
#include "json.h"
#include "pack.h"
#include "util.h"
#include "verify.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define Q_GRACE_MIN_MS 100
#define Q_LEARN_MAX_MS 1000  /* a learn-only round waits no longer */

enum qres { Q_NONE, Q_OK, Q_MOVED, Q_REFUSED, Q_UNKNOWN, Q_DOWN };

struct qpeer {
	size_t idx;                  /* among the cluster's peers */
	const char *name;
	int bad;                     /* refused for this proposal (an invalid state) */
	char why[512];               /* what it last answered, when not ok */
	/* this round */
	enum qres res;
	char newhex[OPT_HEX_OID + 1];  /* the state pushed */
	char adv[OPT_HEX_OID + 1];     /* moved: what the peer holds */
	char learned[OPT_HEX_OID + 1]; /* its learned ref after this session ("": unknown) */
	char lseen[OPT_HEX_OID + 1];   /* the last of those this proposal saw */
	pid_t pid;
	int fd;
	char *buf;
	size_t len, cap;
};

/* One proposal: collection name over its placement. */
struct qprop {
	struct opt_cluster *c;
	const struct opt_cluster_opts *o;
	struct opt_sync *y;
	const char *name;
	char reg[OPT_ACCEPTOR_REG_MAX];
	size_t np;
	struct qpeer pr[OPT_QUORUM_PEERS];
	struct opt_view views[OPT_QUORUM_PEERS];
	struct opt_quorum q;
	struct opt_record rec;
	char me[OPT_BALLOT_ID_HEX + 1];
	int64_t deadline;
	long replayed;               /* transactions the change function replayed */
	unsigned rounds;             /* rounds pushed */
	int learning;                /* this round only learns (Learning, "When" (b)) */
	uint32_t accepted;           /* peers that accepted the chosen value */
};

/* ---- states in the object database ---- */

/* The state at hex (a commit of repo), decoded for register reg:
 * OPT_EINTEGRITY when it is not a state the protocol writes. */
static int state_read(git_repository *repo, const char *reg, const char *hex, struct opt_acceptor_state *out)
{
	git_odb *odb = NULL;
	git_odb_object *obj = NULL;
	git_oid id;
	int rc;

	if (git_oid_fromstr(&id, hex) < 0)
		return opt_error_set(OPT_EINTEGRITY, "invalid object ID");
	if (git_repository_odb(&odb, repo) < 0)
		return opt_git_fail(OPT_EIO, "cannot open the object database");
	if (git_odb_read(&obj, odb, &id) < 0) {
		git_odb_free(odb);
		return opt_git_fail(OPT_EINTEGRITY, "cannot read the acceptor state");
	}
	if (git_odb_object_type(obj) != GIT_OBJECT_COMMIT)
		rc = opt_error_set(OPT_EINTEGRITY, "the acceptor state is not a commit");
	else
		rc = opt_acceptor_decode(out, reg, git_odb_object_data(obj), git_odb_object_size(obj));
	git_odb_object_free(obj);
	git_odb_free(odb);
	return rc;
}

/* Write state s as a commit of repo: its OID into hex. */
static int state_write(git_repository *repo, const struct opt_acceptor_state *s, char hex[OPT_HEX_OID + 1])
{
	git_odb *odb = NULL;
	git_oid id;
	char *buf = NULL, want[OPT_HEX_OID + 1];
	size_t len;
	int rc;

	if ((rc = opt_acceptor_encode(&buf, &len, s)) < 0 || (rc = opt_acceptor_oid(want, s)) < 0) {
		free(buf);
		return rc;
	}
	if (git_repository_odb(&odb, repo) < 0 || git_odb_write(&id, odb, buf, len, GIT_OBJECT_COMMIT) < 0)
		rc = opt_git_fail(OPT_EIO, "cannot write the acceptor state");
	git_odb_free(odb);
	free(buf);
	if (rc < 0)
		return rc;
	git_oid_tostr(hex, OPT_HEX_OID + 1, &id);
	if (strcmp(hex, want) != 0)
		return opt_error_set(OPT_EIO, "the acceptor state was written as another object");
	return 0;
}

static int ref_set(git_repository *repo, const char *ref, const char *hex)
{
	git_oid id;

	if (!*hex)
		return opt_ref_cas(repo, ref, OPT_REF_ANY, NULL, "opt-sync quorum", 0);
	if (git_oid_fromstr(&id, hex) < 0)
		return opt_error_set(OPT_EINVAL, "invalid object ID");
	return opt_ref_cas(repo, ref, OPT_REF_ANY, &id, "opt-sync quorum", opt_now_ms() + 2000);
}

static int ref_hex(git_repository *repo, const char *ref, char hex[OPT_HEX_OID + 1])
{
	git_oid id;
	int rc = opt_ref_read(repo, ref, &id);

	hex[0] = '\0';
	if (rc > 0)
		git_oid_tostr(hex, OPT_HEX_OID + 1, &id);
	return rc;
}

/* 1 if commit hex a descends from hex b or is b, 0 if not, <0. */
static int covers(git_repository *repo, const char *a, const char *b)
{
	git_oid x, y;

	if (!*b)
		return 1;
	if (!*a)
		return 0;
	if (strcmp(a, b) == 0)
		return 1;
	git_oid_fromstr(&x, a);
	git_oid_fromstr(&y, b);
	return sync_descends(repo, &x, &y);
}

/* ---- what this store knows: views, the record, the chosen value ---- */

static int view_load(struct qprop *p, size_t i)
{
	struct opt_view *v = &p->views[i];
	char ref[REFLEN];
	int rc;

	memset(v, 0, sizeof(*v));
	v->known = 1;
	opt_ref_peer_acceptor(ref, sizeof(ref), p->pr[i].name, p->reg);
	if ((rc = ref_hex(p->y->repo, ref, v->oid)) < 0)
		return rc;
	if (rc == 0) {
		opt_acceptor_initial(&v->st, p->reg);
		return 0;
	}
	return state_read(p->y->repo, p->reg, v->oid, &v->st);
}

static int view_store(struct qprop *p, size_t i, const char *hex)
{
	char ref[REFLEN];
	int rc;

	opt_ref_peer_acceptor(ref, sizeof(ref), p->pr[i].name, p->reg);
	if ((rc = ref_set(p->y->repo, ref, hex)) < 0)
		return rc;
	return view_load(p, i);
}

/* The record (the proposal ref) and whether it is settled (the
 * chosen value holds its value). */
static int record_load(struct qprop *p)
{
	struct opt_acceptor_state st;
	char ref[REFLEN], hex[OPT_HEX_OID + 1], chosen[OPT_HEX_OID + 1];
	int rc;

	memset(&p->rec, 0, sizeof(p->rec));
	opt_ref_proposal(ref, sizeof(ref), p->name);
	if ((rc = ref_hex(p->y->repo, ref, hex)) <= 0)
		return rc;
	if ((rc = state_read(p->y->repo, p->reg, hex, &st)) < 0)
		return opt_error_set(rc, "collection '%s': the write-ahead record is damaged: %s", p->name, opt_error_last());
	p->rec.b = st.accepted;
	p->rec.epoch = st.epoch;
	memcpy(p->rec.value, st.value, sizeof(p->rec.value));
	opt_ref_chosen(ref, sizeof(ref), p->name);
	if ((rc = ref_hex(p->y->repo, ref, chosen)) < 0)
		return rc;
	if (rc > 0 && (rc = covers(p->y->repo, chosen, p->rec.value)) < 0)
		return rc;
	p->rec.settled = rc > 0;
	return 0;
}

/* Record (b, value) durably, before the first accept at b is sent. */
static int record_save(struct qprop *p, const struct opt_ballot *b, const char *value)
{
	struct opt_acceptor_state st;
	char ref[REFLEN], hex[OPT_HEX_OID + 1];
	int rc;

	opt_acceptor_initial(&st, p->reg);
	st.accepted = *b;
	if ((rc = opt_ballot_next(&st.promise, b)) < 0)
		return rc;
	memcpy(st.value, value, sizeof(st.value));
	if ((rc = state_write(p->y->repo, &st, hex)) < 0)
		return rc;
	opt_ref_proposal(ref, sizeof(ref), p->name);
	if ((rc = ref_set(p->y->repo, ref, hex)) < 0)
		return rc;
	return record_load(p);
}

/* Move the chosen ref to hex, forward only. */
static int chosen_forward(struct qprop *p, const char *hex)
{
	char ref[REFLEN], cur[OPT_HEX_OID + 1];
	git_oid old, nw;
	int rc;

	opt_ref_chosen(ref, sizeof(ref), p->name);
	if ((rc = ref_hex(p->y->repo, ref, cur)) < 0)
		return rc;
	if (rc > 0 && (rc = covers(p->y->repo, cur, hex)) != 0)
		return rc < 0 ? rc : 0;  /* it knows as much already */
	if (*cur && (rc = covers(p->y->repo, hex, cur)) <= 0)
		return rc < 0 ? rc : opt_error_set(OPT_EINTEGRITY, "collection '%s': two chosen values that are not one chain "
						   "(%s, %s)", p->name, cur, hex);
	git_oid_fromstr(&nw, hex);
	if (*cur)
		git_oid_fromstr(&old, cur);
	return opt_ref_cas(p->y->repo, ref, *cur ? &old : NULL, &nw, "opt-sync quorum: chosen", p->deadline);
}

/* ---- the change function ---- */

/* 1 if a commit of L after w (not reachable from w) belongs to a
 * multi-collection transaction, 0 if none does. */
static int multi_after(git_repository *repo, const git_oid *L, const git_oid *w)
{
	git_revwalk *wk = NULL;
	git_oid id;
	int rc = 0;

	if (git_revwalk_new(&wk, repo) < 0 || git_revwalk_push(wk, L) < 0 || (w && git_revwalk_hide(wk, w) < 0)) {
		git_revwalk_free(wk);
		return opt_git_fail(OPT_EIO, "cannot walk the history to push");
	}
	while (rc == 0 && git_revwalk_next(&id, wk) == 0) {
		git_commit *cm = NULL;
		char *primary;
		if (git_commit_lookup(&cm, repo, &id) < 0) {
			rc = opt_git_fail(OPT_EINTEGRITY, "cannot read a commit to push");
			break;
		}
		primary = opt_trailer_value(git_commit_message(cm), "Opt-Primary");
		rc = primary != NULL;
		free(primary);
		git_commit_free(cm);
	}
	git_revwalk_free(wk);
	return rc;
}

/* 1 when collection name has, after its chosen value, a revision of a
 * multi-collection transaction to propose: after a collection of the push
 * failed, it waits (a pend not chosen must never sit beside a chosen
 * decision). */
static int holds_multi(struct opt_sync *y, const char *name)
{
	char ref[REFLEN];
	git_oid L, ch;
	int hc, rc;

	opt_ref_collection(ref, sizeof(ref), name);
	if ((rc = opt_ref_read(y->repo, ref, &L)) <= 0)
		return rc;
	opt_ref_chosen(ref, sizeof(ref), name);
	if ((hc = opt_ref_read(y->repo, ref, &ch)) < 0)
		return hc;
	return multi_after(y->repo, &L, hc ? &ch : NULL);
}

/* Verify w, a value some peer accepted, as every fetched collection is
 * verified: since base (a commit of ours), or from its start. */
static int verify_value(struct qprop *p, const git_oid *w, const git_oid *L)
{
	char hex[GIT_OID_HEXSZ + 1], bhex[GIT_OID_HEXSZ + 1], msg[1024];
	git_oid base;
	int has_base = git_merge_base(&base, p->y->repo, w, L) == 0, rc;

	git_error_clear();
	sync_hex_of(hex, w);
	if (has_base)
		sync_hex_of(bhex, &base);
	rc = opt_verify_collection_since(p->y->s, p->name, hex, has_base ? bhex : NULL, NULL, NULL, NULL);
	if (rc >= 0)
		return 0;
	snprintf(msg, sizeof(msg), "%s", opt_error_last());
	return opt_error_set(rc != OPT_EIO ? OPT_EINTEGRITY : rc, "collection '%s': the value accepted by the cluster is "
			     "refused: %s", p->name, msg);
}

/* change(w): our transactions not in w, replayed onto it (w "": nothing
 * was ever accepted, our head).  out: the value to propose. */
static int change(struct qprop *p, const char *whex, char out[OPT_HEX_OID + 1])
{
	struct coll cc, *cp = &cc;
	const char *pol = p->o->sync.conflict;
	json_t *names = NULL, *counts = NULL;
	char ref[REFLEN], lhex[OPT_HEX_OID + 1];
	git_oid L, w;
	int rc;

	opt_ref_collection(ref, sizeof(ref), p->name);
	if ((rc = opt_ref_read(p->y->repo, ref, &L)) <= 0)
		return rc < 0 ? rc : opt_error_set(OPT_ENOTFOUND, "no collection '%s'", p->name);
	git_oid_tostr(lhex, sizeof(lhex), &L);
	if (!*whex || (rc = covers(p->y->repo, lhex, whex)) > 0) {
		memcpy(out, lhex, sizeof(lhex));
		return 0;
	}
	if (rc < 0)
		return rc;
	git_oid_fromstr(&w, whex);
	if ((rc = verify_value(p, &w, &L)) < 0)
		return rc;
	memset(&cc, 0, sizeof(cc));
	cc.name = (char *)p->name;
	cc.L = L;
	cc.has_L = 1;
	cc.T = w;
	cc.has_T = 1;
	if ((rc = sync_descends(p->y->repo, &w, &L)) < 0)
		return rc;
	if (rc > 0) {
		/* the cluster's value holds all of ours: take it */
		if ((rc = sync_move_heads(p->y, &cp, 1, 0, p->deadline)) < 0)
			return rc;
		memcpy(out, whex, OPT_HEX_OID + 1);
		return 0;
	}
	if (pol && strcmp(pol, "replay") != 0)
		return opt_error_set(OPT_ECONFLICT, "collection '%s': diverged from the cluster's value; --conflict %s is not "
				     "supported with quorum ordering yet (only replay)", p->name, pol);
	if ((rc = multi_after(p->y->repo, &L, &w)) != 0)
		return rc < 0 ? rc : opt_error_set(OPT_ECONFLICT, "collection '%s': diverged from the cluster's value with a "
						   "multi-collection transaction to replay: not supported with quorum "
						   "ordering yet (pull, then write it again)", p->name);
	/* diverged: our transactions replayed onto w (replay.c) */
	if ((rc = sync_move_heads(p->y, &cp, 1, 1, p->deadline)) < 0)
		return rc;
	names = json_pack("[s]", p->name);
	counts = json_object();
	if (!names || !counts)
		rc = opt_error_oom();
	else
		rc = sync_replay_backups(p->y, "cluster", names, "replay", &p->o->sync, counts, NULL);
	if (rc == 0)
		p->replayed += (long)json_integer_value(json_object_get(counts, p->name));
	json_decref(names);
	json_decref(counts);
	if (rc < 0)
		return rc;
	return ref_hex(p->y->repo, ref, out) < 0 ? opt_error_last_code() : 0;
}

/* ---- one peer's session (a child process) ---- */

/* A push connection: the remote first (the callbacks' payload). */
struct qconn {
	struct remote r;
	char aref[REFLEN], lref[REFLEN];
	git_oid aexp, lexp;          /* what the two refs must hold */
	int has_aexp, has_lexp;
	int ast, lst;                /* status: 0 none came, 1 ok, -1 refused */
	int moved;                   /* push_negotiation found another old value */
	char msg[300];
};

static int q_nego_cb(const git_push_update **u, size_t len, void *payload)
{
	struct qconn *qc = payload;
	git_oid zero;
	size_t i;

	memset(&zero, 0, sizeof(zero));
	for (i = 0; i < len; i++) {
		const git_oid *want = strcmp(u[i]->dst_refname, qc->aref) == 0 ? (qc->has_aexp ? &qc->aexp : &zero)
				      : strcmp(u[i]->dst_refname, qc->lref) == 0 ? (qc->has_lexp ? &qc->lexp : &zero)
										 : NULL;
		if (!want || !git_oid_equal(&u[i]->src, want)) {
			qc->moved = 1;
			snprintf(qc->msg, sizeof(qc->msg), "%s moved", u[i]->dst_refname);
			git_error_set_str(GIT_ERROR_NET, "the peer's ref moved since it was read");
			return GIT_EUSER;
		}
	}
	return 0;
}

static int q_update_cb(const char *refname, const char *status, void *data)
{
	struct qconn *qc = data;
	int *st = strcmp(refname, qc->aref) == 0 ? &qc->ast : strcmp(refname, qc->lref) == 0 ? &qc->lst : NULL;

	if (st)
		*st = status ? -1 : 1;
	if (status)
		snprintf(qc->msg, sizeof(qc->msg), "%s: %s", refname, status);
	return 0;
}

/* The learn of this connection: the peer's learned ref (at l, has_l)
 * moves to our chosen value when l is a proper ancestor of it. */
static int learn_wanted(struct opt_sync *y, const char *name, const git_oid *l, int has_l, git_oid *chosen)
{
	char ref[REFLEN];
	int rc;

	opt_ref_chosen(ref, sizeof(ref), name);
	if ((rc = opt_ref_read(y->repo, ref, chosen)) <= 0)
		return rc;
	if (!has_l)
		return 1;
	if (git_oid_equal(l, chosen) || !sync_have_object(y, l))
		return 0;
	rc = sync_descends(y->repo, chosen, l);
	if (rc < 0)
		opt_error_clear();
	return rc > 0;
}

/* Fetch the peer's acceptor ref into the staging ref (the chain and the
 * values come along). */
static int fetch_state(struct opt_sync *y, struct qconn *qc, const char *stage)
{
	git_remote *gr = NULL;
	git_fetch_options fo;
	git_strarray specs;
	char *spec = NULL;
	int rc = 0;

	if (asprintf(&spec, "+%s:%s", qc->aref, stage) < 0)
		return opt_error_oom();
	specs.strings = &spec;
	specs.count = 1;
	git_fetch_options_init(&fo, GIT_FETCH_OPTIONS_VERSION);
	sync_callbacks(&fo.callbacks, &qc->r);
	fo.prune = GIT_FETCH_NO_PRUNE;
	fo.update_fetchhead = 0;
	fo.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_NONE;
	if (sync_anon_remote(&gr, y->repo, qc->r.url) < 0 || git_remote_fetch(gr, &specs, &fo, "opt-sync quorum") < 0)
		rc = sync_net_fail(&qc->r, "cannot fetch the acceptor state");
	git_remote_free(gr);
	free(spec);
	return rc;
}

/* A learn-only session (docs/quorum.md, Learning): the peer's learned
 * ref (advertised at l) moves to our chosen value when it lags, by the
 * same compare-and-swap; the acceptor ref is left alone.  learned: what
 * the learned ref holds after it.  Frees gr. */
static enum qres learn_net(struct opt_sync *y, struct qconn *qc, git_remote *gr, const git_remote_callbacks *cb,
			   const struct qprop *p, const git_oid *l, char *learned)
{
	git_push_options po;
	git_strarray specs;
	char *sp = NULL, chref[REFLEN];
	git_oid chosen;
	enum qres res = Q_OK;

	qc->has_lexp = l != NULL;
	if (l)
		qc->lexp = *l;
	opt_ref_chosen(chref, sizeof(chref), p->name);
	if (learn_wanted(y, p->name, l, l != NULL, &chosen) > 0 && asprintf(&sp, "%s:%s", chref, qc->lref) >= 0) {
		specs.strings = &sp;
		specs.count = 1;
		git_push_options_init(&po, GIT_PUSH_OPTIONS_VERSION);
		po.callbacks = *cb;
		po.callbacks.push_negotiation = q_nego_cb;
		po.callbacks.push_update_reference = q_update_cb;
		git_error_clear();
		(void)git_remote_push(gr, &specs, &po);
		if (qc->lst > 0)
			git_oid_tostr(learned, OPT_HEX_OID + 1, &chosen);
		else if (!qc->moved && qc->lst == 0)
			res = Q_UNKNOWN, sync_net_fail(&qc->r, "no answer to the learn");
	}
	git_remote_free(gr);
	free(sp);
	return res;
}

/* Over the network: the advertisement is the read; push the state (and
 * the learn) with the advertised values checked. */
static enum qres child_net(struct opt_sync *y, struct qconn *qc, const struct qprop *p, size_t i, char *adv,
			   const char *stage, char *learned)
{
	const git_remote_head **refs = NULL;
	git_remote_callbacks cb;
	git_push_options po;
	git_remote *gr = NULL;
	git_strarray specs;
	char *sp[2] = { NULL, NULL }, chref[REFLEN];
	const git_oid *a = NULL, *l = NULL;
	git_oid chosen;
	size_t nr = 0, k;
	enum qres res;
	int grc;

	sync_callbacks(&cb, &qc->r);
	if (sync_anon_remote(&gr, y->repo, qc->r.url) < 0)
		return sync_net_fail(&qc->r, "invalid URL"), Q_DOWN;
	if (git_remote_connect(gr, GIT_DIRECTION_PUSH, &cb, NULL, NULL) < 0 || git_remote_ls(&refs, &nr, gr) < 0) {
		sync_net_fail(&qc->r, "cannot connect");
		git_remote_free(gr);
		return Q_DOWN;
	}
	for (k = 0; k < nr; k++) {
		if (strcmp(refs[k]->name, qc->aref) == 0)
			a = &refs[k]->oid;
		else if (strcmp(refs[k]->name, qc->lref) == 0)
			l = &refs[k]->oid;
	}
	adv[0] = '\0';
	if (a)
		git_oid_tostr(adv, OPT_HEX_OID + 1, a);
	if (l)
		git_oid_tostr(learned, OPT_HEX_OID + 1, l);
	if (p->learning)
		return learn_net(y, qc, gr, &cb, p, l, learned);
	if (strcmp(adv, p->views[i].oid) != 0) {
		/* (a points into the advertisement, freed with gr) */
		int have = !a || sync_have_object(y, a);
		git_remote_free(gr);
		if (!have && fetch_state(y, qc, stage) < 0)
			return Q_UNKNOWN;
		return Q_MOVED;
	}
	qc->has_aexp = a != NULL;
	if (a)
		qc->aexp = *a;
	qc->has_lexp = l != NULL;
	if (l)
		qc->lexp = *l;
	if (asprintf(&sp[0], "%s:%s", stage, qc->aref) < 0)
		sp[0] = NULL;
	specs.strings = sp;
	specs.count = 1;
	opt_ref_chosen(chref, sizeof(chref), p->name);
	if (learn_wanted(y, p->name, l, l != NULL, &chosen) > 0 && asprintf(&sp[1], "%s:%s", chref, qc->lref) >= 0)
		specs.count = 2;
	git_push_options_init(&po, GIT_PUSH_OPTIONS_VERSION);
	po.callbacks = cb;
	po.callbacks.push_negotiation = q_nego_cb;
	po.callbacks.push_update_reference = q_update_cb;
	git_error_clear();
	grc = sp[0] ? git_remote_push(gr, &specs, &po) : -1;
	if (qc->moved)
		res = Q_MOVED;
	else if (qc->ast > 0)
		res = Q_OK;
	else if (qc->ast < 0)
		res = Q_REFUSED;
	else
		res = Q_UNKNOWN;
	if (specs.count == 2 && qc->lst > 0)
		git_oid_tostr(learned, OPT_HEX_OID + 1, &chosen);
	if (res == Q_UNKNOWN)
		sync_net_fail(&qc->r, "no answer to the push");
	else if (res == Q_REFUSED)
		opt_error_set(OPT_ECONFLICT, "peer '%s' refused: %s", qc->r.name, qc->msg);
	(void)grc;
	git_remote_free(gr);
	free(sp[0]);
	free(sp[1]);
	return res;
}

/* Write the objects reachable from nw and not from hide (may be NULL)
 * into the path peer as one pack. */
static int pack_to_path(struct opt_sync *y, struct remote *r, const git_oid *nw, const git_oid *hide)
{
	git_packbuilder *pb = NULL;
	git_revwalk *w = NULL;
	git_odb *odb = NULL;
	char dir[PATH_MAX];
	int rc = 0;

	if (git_packbuilder_new(&pb, y->repo) < 0 || git_revwalk_new(&w, y->repo) < 0 || git_revwalk_push(w, nw) < 0 ||
	    (hide && sync_have_object(y, hide) && git_revwalk_hide(w, hide) < 0) || git_packbuilder_insert_walk(pb, w) < 0) {
		rc = opt_git_fail(OPT_EIO, "cannot pack the objects to push");
		goto done;
	}
	snprintf(dir, sizeof(dir), "%s/objects/pack", git_repository_path(r->peer_repo));
	if (git_packbuilder_object_count(pb) > 0 && git_packbuilder_write(pb, dir, 0, NULL, NULL) < 0) {
		rc = sync_net_fail(r, "cannot write objects");
		goto done;
	}
	if (git_repository_odb(&odb, r->peer_repo) == 0)
		git_odb_refresh(odb);
	git_odb_free(odb);
done:
	git_revwalk_free(w);
	git_packbuilder_free(pb);
	return rc;
}

/* A path peer: read its ref directly, write the objects, then
 * compare-and-swap under the ref's lock (docs/quorum.md, "Path peers"). */
static enum qres child_path(struct opt_sync *y, struct qconn *qc, const struct qprop *p, size_t i, char *adv,
			    const char *stage, char *learned)
{
	git_repository *pr = qc->r.peer_repo;
	git_oid a, l, nw, chosen;
	int ha, hl, rc;

	if (p->learning) {
		if ((hl = opt_ref_read(pr, qc->lref, &l)) < 0)
			return Q_DOWN;
		if (hl)
			git_oid_tostr(learned, OPT_HEX_OID + 1, &l);
		if (learn_wanted(y, p->name, &l, hl, &chosen) > 0 && pack_to_path(y, &qc->r, &chosen, hl ? &l : NULL) == 0 &&
		    opt_ref_cas(pr, qc->lref, hl ? &l : NULL, &chosen, "opt-sync quorum: learned", opt_now_ms() + 1000) == 0)
			git_oid_tostr(learned, OPT_HEX_OID + 1, &chosen);
		opt_error_clear();
		return Q_OK;
	}

	if ((ha = opt_ref_read(pr, qc->aref, &a)) < 0)
		return Q_DOWN;
	adv[0] = '\0';
	if (ha)
		git_oid_tostr(adv, OPT_HEX_OID + 1, &a);
	if (strcmp(adv, p->views[i].oid) != 0)
		return ha && !sync_have_object(y, &a) && fetch_state(y, qc, stage) < 0 ? Q_UNKNOWN : Q_MOVED;
	git_oid_fromstr(&nw, p->pr[i].newhex);
	if (pack_to_path(y, &qc->r, &nw, ha ? &a : NULL) < 0)
		return Q_UNKNOWN;
	rc = opt_ref_cas(pr, qc->aref, ha ? &a : NULL, &nw, "opt-sync quorum", opt_now_ms() + 1000);
	if (rc == OPT_ECONFLICT)
		return opt_error_set(OPT_ECONFLICT, "peer '%s': %s moved", qc->r.name, qc->aref), Q_REFUSED;
	if (rc < 0)
		return Q_UNKNOWN;
	/* the learn */
	if ((hl = opt_ref_read(pr, qc->lref, &l)) > 0)
		git_oid_tostr(learned, OPT_HEX_OID + 1, &l);
	if (hl >= 0 && learn_wanted(y, p->name, &l, hl, &chosen) > 0 &&
	    pack_to_path(y, &qc->r, &chosen, hl ? &l : NULL) == 0) {
		if (opt_ref_cas(pr, qc->lref, hl ? &l : NULL, &chosen, "opt-sync quorum: learned", opt_now_ms() + 1000) < 0)
			opt_error_clear();
		else
			git_oid_tostr(learned, OPT_HEX_OID + 1, &chosen);
	}
	if (opt_pack_consolidate(pr, 0) < 0)
		opt_error_clear();
	return Q_OK;
}

static const char *const res_names[] = { "none", "ok", "moved", "refused", "unknown", "down" };

/* The child's part: one session with peer i; one line of JSON on fd. */
static void child_run(const struct qprop *p, size_t i, int fd)
{
	struct opt_store *s = NULL;
	struct opt_sync *y = NULL;
	struct qconn qc;
	char stage[REFLEN], adv[OPT_HEX_OID + 1] = "", learned[OPT_HEX_OID + 1] = "";
	enum qres res = Q_DOWN;
	json_t *out;
	char *line;

	memset(&qc, 0, sizeof(qc));
	opt_ref_acceptor(qc.aref, sizeof(qc.aref), p->reg);
	opt_ref_collection(qc.lref, sizeof(qc.lref), p->name);
	opt_ref_quorum_stage(stage, sizeof(stage), p->pr[i].name, p->reg);
	if (opt_store_open(&s, opt_store_path(p->c->s)) == 0 && opt_sync_open(&y, s) == 0 &&
	    sync_remote_open(y, &qc.r, p->pr[i].name, &p->o->sync) == 0)
		res = qc.r.path ? child_path(y, &qc, p, i, adv, stage, learned)
				    : child_net(y, &qc, p, i, adv, stage, learned);
	out = json_pack("{s:s,s:s,s:s,s:s?}", "res", res_names[res], "adv", adv, "learned", learned, "error",
			res == Q_OK || res == Q_MOVED ? NULL : opt_error_last());
	line = out ? json_dumps(out, JSON_COMPACT) : NULL;
	if (line) {
		size_t n = strlen(line), off = 0;
		while (off < n) {
			ssize_t w = write(fd, line + off, n - off);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				break;
			off += (size_t)w;
		}
	}
	free(line);
	json_decref(out);
	sync_remote_close(&qc.r);
	opt_sync_free(y);
	opt_store_free(s);
}

/* ---- what the peers learned (docs/quorum.md, Learning; Durability) ---- */

static int round_run(struct qprop *p, uint32_t to, const struct opt_ballot *b, const char *value);

/* What peer i's learned ref is known to hold (hex, "" unknown): what this
 * proposal saw, else its tracking ref. */
static int learned_known(struct qprop *p, size_t i, char hex[OPT_HEX_OID + 1])
{
	char ref[REFLEN];

	if (p->pr[i].lseen[0]) {
		memcpy(hex, p->pr[i].lseen, OPT_HEX_OID + 1);
		return 0;
	}
	opt_ref_tracking(ref, sizeof(ref), p->pr[i].name, p->name);
	return ref_hex(p->y->repo, ref, hex) < 0 ? opt_error_last_code() : 0;
}

/* 1 when peer i's learned ref is known to hold the chosen value (or a
 * later one), 0 when it owes a learn. */
static int learned_holds(struct qprop *p, size_t i, const char *chosen)
{
	char hex[OPT_HEX_OID + 1];
	git_oid id;
	int rc;

	if ((rc = learned_known(p, i, hex)) < 0)
		return rc;
	if (!*hex || git_oid_fromstr(&id, hex) < 0 || !sync_have_object(p->y, &id))
		return 0;
	rc = covers(p->y->repo, hex, chosen);
	if (rc < 0)
		opt_error_clear();
	return rc > 0;
}

/* Peer i answered what its learned ref holds: keep it, and as its
 * tracking ref when it is a chosen value this store holds (an ancestor
 * of the chosen ref, or it): the owed list is the peers whose tracking
 * ref is behind the chosen ref. */
static int learned_note(struct qprop *p, size_t i)
{
	struct qpeer *q = &p->pr[i];
	char ref[REFLEN], chosen[OPT_HEX_OID + 1];
	git_oid id;
	int rc;

	if (!q->learned[0])
		return 0;
	memcpy(q->lseen, q->learned, sizeof(q->lseen));
	opt_ref_chosen(ref, sizeof(ref), p->name);
	if ((rc = ref_hex(p->y->repo, ref, chosen)) <= 0 || git_oid_fromstr(&id, q->learned) < 0 ||
	    !sync_have_object(p->y, &id))
		return rc < 0 ? rc : 0;
	if ((rc = covers(p->y->repo, chosen, q->learned)) <= 0) {
		opt_error_clear();
		return 0;
	}
	opt_ref_tracking(ref, sizeof(ref), q->name, p->name);
	return ref_set(p->y->repo, ref, q->learned);
}

/* A push that pushed no round: what is owed is sent, one learn-only
 * session to each peer whose learned ref is behind the chosen value,
 * in parallel, waiting no longer than Q_LEARN_MAX_MS; a peer that does
 * not answer stays owed.  Never fails the push. */
static int learn_run(struct qprop *p)
{
	char ref[REFLEN], chosen[OPT_HEX_OID + 1];
	uint32_t owed = 0;
	size_t i;
	int rc;

	opt_ref_chosen(ref, sizeof(ref), p->name);
	if ((rc = ref_hex(p->y->repo, ref, chosen)) <= 0)
		return rc;
	for (i = 0; i < p->np; i++) {
		if ((rc = learned_holds(p, i, chosen)) < 0)
			return rc;
		if (!rc && !p->pr[i].bad)
			owed |= UINT32_C(1) << i;
	}
	if (!owed)
		return 0;
	p->learning = 1;
	rc = round_run(p, owed, NULL, NULL);
	p->learning = 0;
	return rc;
}

/* ---- one round: the pushes, in parallel, done at the first majority ---- */

/* Take what peer i's child sent. */
static void take_answer(struct qprop *p, size_t i)
{
	struct qpeer *q = &p->pr[i];
	json_t *v = q->buf ? json_loadb(q->buf, q->len, 0, NULL) : NULL;
	const char *res = json_string_value(json_object_get(v, "res"));
	const char *adv = json_string_value(json_object_get(v, "adv"));
	const char *err = json_string_value(json_object_get(v, "error"));
	const char *lr = json_string_value(json_object_get(v, "learned"));
	size_t k;

	q->res = Q_UNKNOWN;
	for (k = 1; res && k < sizeof(res_names) / sizeof(res_names[0]); k++)
		if (strcmp(res, res_names[k]) == 0)
			q->res = (enum qres)k;
	snprintf(q->adv, sizeof(q->adv), "%s", adv && strlen(adv) == OPT_HEX_OID ? adv : "");
	snprintf(q->learned, sizeof(q->learned), "%s", lr && strlen(lr) == OPT_HEX_OID ? lr : "");
	if (err)
		snprintf(q->why, sizeof(q->why), "%s", err);
	else if (!v)
		snprintf(q->why, sizeof(q->why), "peer '%s': no answer", q->name);
	json_decref(v);
}

/* A peer that moved: take its state as the new view when it is one the
 * protocol writes and descends from the view we had; else the peer is
 * refused for this proposal. */
static int take_moved(struct qprop *p, size_t i)
{
	struct qpeer *q = &p->pr[i];
	struct opt_acceptor_state st;
	int rc;

	if (!*q->adv) {
		q->bad = 1;
		snprintf(q->why, sizeof(q->why), "peer '%s': the acceptor state of '%s' vanished (the peer lost its "
			 "state: refused)", q->name, p->name);
		return 0;
	}
	if (state_read(p->y->repo, p->reg, q->adv, &st) < 0 || st.retired ||
	    (rc = covers(p->y->repo, q->adv, p->views[i].oid)) <= 0) {
		q->bad = 1;
		snprintf(q->why, sizeof(q->why), "peer '%s': the acceptor state of '%s' is not one the protocol writes "
			 "after the one seen before (refused): %s", q->name, p->name, opt_error_last());
		opt_error_clear();
		return 0;
	}
	return view_store(p, i, q->adv);
}

/* The peers of set whose view shows what the round wanted: for an
 * accept, (b, value) accepted; for a prepare, b promised. */
static uint32_t reached(const struct qprop *p, const struct opt_ballot *b, const char *value)
{
	uint32_t m = 0;
	size_t i;

	for (i = 0; i < p->np; i++) {
		const struct opt_acceptor_state *s = &p->views[i].st;
		if (value ? !opt_ballot_cmp(&s->accepted, b) && !strcmp(s->value, value) : !opt_ballot_cmp(&s->promise, b))
			m |= UINT32_C(1) << i;
	}
	return m;
}

static void round_reap(struct qprop *p, size_t i, int kill_it)
{
	struct qpeer *q = &p->pr[i];

	if (q->fd >= 0)
		close(q->fd);
	q->fd = -1;
	if (q->pid > 0) {
		if (kill_it)
			kill(q->pid, SIGKILL);
		while (waitpid(q->pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
	q->pid = -1;
}

static int round_start(struct qprop *p, uint32_t to)
{
	size_t i, k;
	int fds[2];

	fflush(NULL);
	for (i = 0; i < p->np; i++) {
		struct qpeer *q = &p->pr[i];
		if (!(to & (UINT32_C(1) << i)))
			continue;
		if (pipe(fds) < 0)
			return opt_error_set(OPT_EIO, "cannot make a pipe: %s", strerror(errno));
		q->pid = fork();
		if (q->pid < 0) {
			close(fds[0]);
			close(fds[1]);
			return opt_error_set(OPT_EIO, "cannot start a process: %s", strerror(errno));
		}
		if (q->pid == 0) {
			close(fds[0]);
			for (k = 0; k < i; k++)
				if (p->pr[k].fd >= 0)
					close(p->pr[k].fd);
			child_run(p, i, fds[1]);
			_exit(0);
		}
		close(fds[1]);
		q->fd = fds[0];
	}
	return 0;
}

/* Read the children until each answered, or the round is decided (a
 * majority shows the wanted state) and a grace has passed (the time the
 * majority took, at least Q_GRACE_MIN_MS), or the deadline. */
static int round_wait(struct qprop *p, const struct opt_ballot *b, const char *value)
{
	struct pollfd pf[OPT_QUORUM_PEERS];
	size_t idx[OPT_QUORUM_PEERS], n, i;
	int64_t start = opt_now_ms(), until = p->deadline;
	int rc = 0;

	if (p->learning && until > start + Q_LEARN_MAX_MS)
		until = start + Q_LEARN_MAX_MS;

	for (;;) {
		int64_t now = opt_now_ms();
		for (n = 0, i = 0; i < p->np; i++)
			if (p->pr[i].fd >= 0) {
				pf[n].fd = p->pr[i].fd;
				pf[n].events = POLLIN;
				pf[n].revents = 0;
				idx[n++] = i;
			}
		if (n == 0 || now >= until)
			break;
		if (poll(pf, n, (int)(until - now)) < 0 && errno != EINTR)
			break;
		for (i = 0; i < n; i++) {
			struct qpeer *q = &p->pr[idx[i]];
			ssize_t got;
			if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			if (q->cap - q->len < 1024 && OPT_ALLOC_GROW(q->buf, q->len + 1024, q->cap) < 0)
				return opt_error_oom();
			got = read(q->fd, q->buf + q->len, q->cap - q->len);
			if (got < 0 && errno == EINTR)
				continue;
			if (got > 0) {
				q->len += (size_t)got;
				continue;
			}
			round_reap(p, idx[i], 0);
			take_answer(p, idx[i]);
			if ((rc = learned_note(p, idx[i])) < 0)
				return rc;
			if (p->learning) {
				if (until == p->deadline) {
					int64_t took = opt_now_ms() - start;
					until = opt_now_ms() + (took > Q_GRACE_MIN_MS ? took : Q_GRACE_MIN_MS);
					if (until > start + Q_LEARN_MAX_MS)
						until = start + Q_LEARN_MAX_MS;
				}
				continue;
			}
			if (q->res == Q_OK && (rc = view_store(p, idx[i], q->newhex)) < 0)
				return rc;
			if (q->res == Q_MOVED && (rc = take_moved(p, idx[i])) < 0)
				return rc;
			if (until == p->deadline && opt_quorum_ok(&p->q, reached(p, b, value))) {
				int64_t took = opt_now_ms() - start;
				until = opt_now_ms() + (took > Q_GRACE_MIN_MS ? took : Q_GRACE_MIN_MS);
				if (until > p->deadline)
					until = p->deadline;
			}
		}
	}
	/* abandoned: their outcome is unknown, settled by the next reading */
	for (i = 0; i < p->np; i++)
		if (p->pr[i].fd >= 0) {
			round_reap(p, i, 1);
			p->pr[i].res = Q_UNKNOWN;
			snprintf(p->pr[i].why, sizeof(p->pr[i].why), "peer '%s': no answer in time (abandoned)", p->pr[i].name);
		}
	return 0;
}

/* Only this process's children write the staging refs, and none runs
 * now: a lock left there is one of a child killed when abandoned. */
static void stage_unlock(git_repository *repo, const char *stage)
{
	char path[PATH_MAX];

	if ((size_t)snprintf(path, sizeof(path), "%s%s.lock", git_repository_path(repo), stage) < sizeof(path))
		unlink(path);
}

/* Push prepare(b) (value NULL) or accept(b, value) to the peers of to. */
static int round_run(struct qprop *p, uint32_t to, const struct opt_ballot *b, const char *value)
{
	char stage[REFLEN];
	size_t i;
	int rc = 0;

	for (i = 0; i < p->np; i++) {
		struct qpeer *q = &p->pr[i];
		struct opt_acceptor_state st;
		q->res = Q_NONE;
		q->fd = -1;
		q->pid = -1;
		q->len = 0;
		q->learned[0] = '\0';
		if (q->bad)
			to &= ~(UINT32_C(1) << i);
		if (!(to & (UINT32_C(1) << i)) || p->learning)
			continue;
		rc = value ? opt_acceptor_accept(&st, &p->views[i].st, p->views[i].oid, b, value, 0)
			   : opt_acceptor_prepare(&st, &p->views[i].st, p->views[i].oid, b, 0);
		if (rc < 0 || (rc = state_write(p->y->repo, &st, q->newhex)) < 0)
			return rc;
		opt_ref_quorum_stage(stage, sizeof(stage), q->name, p->reg);
		stage_unlock(p->y->repo, stage);
		if ((rc = ref_set(p->y->repo, stage, q->newhex)) < 0)
			return rc;
	}
	p->rounds++;
	if ((rc = round_start(p, to)) == 0)
		rc = round_wait(p, b, value);
	for (i = 0; i < p->np; i++)
		if (p->pr[i].fd >= 0 || p->pr[i].pid > 0)
			round_reap(p, i, 1);
	return rc;
}

/* ---- one proposal ---- */

/* Done: the record is settled (or there is none) and the chosen value
 * holds our head. */
static int proposal_done(struct qprop *p)
{
	char ref[REFLEN], L[OPT_HEX_OID + 1], chosen[OPT_HEX_OID + 1];
	int rc;

	if (p->rec.b.n && !p->rec.settled)
		return 0;
	opt_ref_chosen(ref, sizeof(ref), p->name);
	if ((rc = ref_hex(p->y->repo, ref, chosen)) <= 0)
		return rc;
	opt_ref_collection(ref, sizeof(ref), p->name);
	if ((rc = ref_hex(p->y->repo, ref, L)) < 0)
		return rc;
	return covers(p->y->repo, chosen, L);
}

/* No majority can answer any more: the peers that did not, why. */
static int no_majority(struct qprop *p)
{
	char msg[1024] = "";
	size_t i, l;

	for (i = 0; i < p->np; i++)
		if (p->pr[i].bad || (p->pr[i].res != Q_OK && p->pr[i].res != Q_MOVED && p->pr[i].res != Q_NONE)) {
			l = strlen(msg);
			snprintf(msg + l, sizeof(msg) - l, "%s%s", l ? "; " : "", p->pr[i].why[0] ? p->pr[i].why : p->pr[i].name);
		}
	return opt_error_set(OPT_ENET, "collection '%s': no majority of its %zu peers answered (%s)", p->name, p->np, msg);
}

static int proposal_step(struct qprop *p, int *progress)
{
	struct opt_plan pl;
	uint32_t answering = 0, before;
	size_t i;
	int rc;

	*progress = 0;
	if ((rc = record_load(p)) < 0 ||
	    (rc = opt_proposer_decide(&pl, p->views, p->np, &p->q, &p->q, 0, &p->rec, p->me)) < 0)
		return rc;
	if (pl.kind == OPT_PLAN_REFRESH)
		return opt_error_set(OPT_EINTEGRITY, "collection '%s': a peer shows a newer membership epoch; membership "
				     "changes are not supported yet", p->name);
	if (pl.kind == OPT_PLAN_CHOSEN) {
		*progress = 1;
		return chosen_forward(p, pl.value);
	}
	if ((rc = proposal_done(p)) != 0)
		return rc < 0 ? rc : 1;
	if (pl.kind == OPT_PLAN_PROPOSE) {
		if ((rc = change(p, pl.base, pl.value)) < 0 || (rc = record_save(p, &pl.b, pl.value)) < 0)
			return rc;
	}
	before = reached(p, &pl.b, pl.kind == OPT_PLAN_PREPARE ? NULL : pl.value);
	if ((rc = round_run(p, pl.to, &pl.b, pl.kind == OPT_PLAN_PREPARE ? NULL : pl.value)) < 0)
		return rc;
	*progress = opt_quorum_ok(&p->q, reached(p, &pl.b, pl.kind == OPT_PLAN_PREPARE ? NULL : pl.value)) ||
		    reached(p, &pl.b, pl.kind == OPT_PLAN_PREPARE ? NULL : pl.value) != before;
	for (i = 0; i < p->np; i++)
		if (!p->pr[i].bad && (p->pr[i].res == Q_OK || p->pr[i].res == Q_MOVED || p->pr[i].res == Q_REFUSED ||
				      (p->pr[i].res == Q_NONE && !(pl.to & (UINT32_C(1) << i)))))
			answering |= UINT32_C(1) << i;
	if (!opt_quorum_ok(&p->q, answering))
		return no_majority(p);
	return 0;
}

/* Rounds until the chosen value holds our head: prepare when needed,
 * accept, settle; a lost round backs off. */
static int proposal_run(struct qprop *p)
{
	unsigned lost = 0;
	int rc, progress;

	for (;;) {
		if ((rc = proposal_step(p, &progress)) != 0)
			return rc < 0 ? rc : 0;
		if (progress) {
			lost = 0;
			continue;
		}
		if (opt_now_ms() >= p->deadline)
			return opt_error_set(OPT_EBUSY, "collection '%s': other writers kept the cluster busy: gave up after "
					     "%u rounds", p->name, lost + 1);
		if (lost++ > 0)
			opt_sleep_ms(opt_backoff_ms(lost < 8 ? lost : 8, p->o->backoff_ms ? p->o->backoff_ms : 200, 5000));
	}
}

static int proposal_open(struct qprop *p, struct opt_cluster *c, const struct opt_cluster_opts *o, const char *name,
			 const char *me)
{
	size_t idx[OPT_CLUSTER_PEERS_MAX], i;
	int rc;

	memset(p, 0, sizeof(*p));
	p->c = c;
	p->o = o;
	p->y = c->y;
	p->name = name;
	p->deadline = opt_now_ms() + sync_busy_timeout(&o->sync);
	memcpy(p->me, me, sizeof(p->me));
	snprintf(p->reg, sizeof(p->reg), "collections/%s", name);
	p->np = opt_cluster_place((const char *const *)c->peers, c->n, name, opt_cluster_replicas(c), idx);
	if (p->np > OPT_QUORUM_PEERS)
		p->np = OPT_QUORUM_PEERS;
	p->q.old = p->np >= 32 ? UINT32_MAX : (UINT32_C(1) << p->np) - 1;
	for (i = 0; i < p->np; i++) {
		p->pr[i].idx = idx[i];
		p->pr[i].name = c->peers[idx[i]];
		p->pr[i].fd = -1;
		p->pr[i].pid = -1;
		if ((rc = view_load(p, i)) < 0)
			return rc;
	}
	return 0;
}

static void proposal_close(struct qprop *p)
{
	size_t i;

	for (i = 0; i < p->np; i++)
		free(p->pr[i].buf);
}

/* The record of collection name after its proposal (rc its result, err
 * its message). */
static json_t *proposal_rec(struct qprop *p, int rc, const char *err)
{
	char ref[REFLEN], chosen[OPT_HEX_OID + 1] = "";
	json_t *rec, *acc = json_array(), *down = json_array();
	git_oid id;
	size_t i;
	int full = 1;

	opt_ref_chosen(ref, sizeof(ref), p->name);
	if (ref_hex(p->y->repo, ref, chosen) < 0)
		opt_error_clear();
	for (i = 0; i < p->np; i++) {
		const struct opt_acceptor_state *s = &p->views[i].st;
		if (*chosen && s->value[0] && covers(p->y->repo, s->value, chosen) > 0)
			json_array_append_new(acc, json_string(p->pr[i].name));
		else
			json_array_append_new(down, json_string(p->pr[i].name));
		if (*chosen && learned_holds(p, i, chosen) <= 0)
			full = 0;
	}
	opt_error_clear();
	rec = json_pack("{s:s,s:s,s:s,s:o,s:o}", "collection", p->name, "status", rc == 0 ? "chosen" : "failed",
			"durability", rc < 0 ? "local" : full ? "full" : "majority", "accepted", acc,
			"behind", down);
	if (rec && *chosen && git_oid_fromstr(&id, chosen) == 0)
		json_object_set_new(rec, "rev", json_integer(sync_rev_of(p->y, p->name, &id)));
	if (rec && p->replayed)
		json_object_set_new(rec, "replayed", json_integer(p->replayed));
	if (rec && rc < 0)
		json_object_set_new(rec, "error", json_string(err));
	return rec;
}

static int emit_rec(const struct opt_cluster_opts *o, json_t *rec)
{
	int rc;

	if (!rec)
		return opt_error_oom();
	rc = o->sync.emit ? o->sync.emit(rec, o->sync.arg) : 0;
	json_decref(rec);
	return rc;
}

int cluster_quorum_push(struct opt_cluster *c, const json_t *names, const struct opt_cluster_opts *o)
{
	struct opt_identity id;
	struct qprop *p = NULL;
	size_t i, nfail = 0, nc = json_array_size(names);
	int rc, worst = 0;
	char worst_msg[1024] = "", msg[1024];

	if (o->sync.dry_run)
		return opt_error_set(OPT_EINVAL, "--dry-run is not supported with quorum ordering yet");
	if ((rc = opt_identity_get(&id, c->s, 1)) < 0)
		return rc;
	if (!(p = malloc(sizeof(*p))))
		return opt_error_oom();
	/* in name order, each chosen before the next starts (pends before
	 * their primary) */
	for (i = 0; i < nc; i++) {
		const char *name = json_string_value(json_array_get(names, i));
		rc = proposal_open(p, c, o, name, id.pub);
		if (rc == 0 && nfail && (rc = holds_multi(c->y, name)) > 0)
			rc = opt_error_set(OPT_ENET, "collection '%s' not pushed: a multi-collection transaction waits for "
					   "the collections before it to be chosen", name);
		if (rc == 0)
			rc = proposal_run(p);
		if (rc == 0 && p->rounds == 0 && learn_run(p) < 0)
			opt_error_clear();
		snprintf(msg, sizeof(msg), "%s", rc < 0 ? opt_error_last() : "");
		if (rc < 0) {
			nfail++;
			if (!worst || (worst == OPT_ENET && rc != OPT_ENET)) {
				worst = rc;
				snprintf(worst_msg, sizeof(worst_msg), "%s", opt_error_last());
			}
		}
		rc = emit_rec(o, proposal_rec(p, rc, msg));
		proposal_close(p);
		if (rc != 0)
			break;
	}
	free(p);
	sodium_memzero(&id, sizeof(id));
	if (rc == 0)
		rc = emit_rec(o, json_pack("{s:{s:s,s:s,s:I,s:I,s:I,s:I}}", "cluster", "op", "push", "ordering", "quorum",
					   "collections", (json_int_t)nc, "peers", (json_int_t)c->n, "replicas",
					   (json_int_t)opt_cluster_replicas(c), "chosen", (json_int_t)(nc - nfail)));
	if (rc != 0)
		return rc;
	if (!worst)
		return 0;
	if (nfail > 1)
		return opt_error_set(worst, "%zu of %zu collections not chosen (kept local): %s", nfail, nc, worst_msg);
	return opt_error_set(worst, "%s (kept local)", worst_msg);
}
