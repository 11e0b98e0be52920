/* refs.c - the only code that reads or moves the store's refs, the ref
 * namespace, and the trailers of the store's commits. */
#include "store/git.h"
#include "store/internal.h"
#include "error.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The ref namespace (docs/protocol.md, opt-sync(1)):
 *   refs/opt/collections/COLL        a collection's head
 *   refs/opt/remotes/REMOTE/COLL     what remote (or peer) REMOTE was last
 *                                    seen to hold: the tracking ref
 *   refs/opt/incoming/REMOTE/COLL    a fetched head, not yet verified
 *   refs/opt/sync/backup/COLL        a collection's head before a replay
 *   refs/opt/sync/push/COLL          the staging ref of a push
 *   refs/opt/sync/none/              a prefix under which no ref lives
 * and the quorum protocol's (docs/quorum.md, "Ref names"):
 *   refs/opt/acceptors/REG           on a peer, the acceptor state of
 *                                    register REG (collections/C, members)
 *   refs/opt/chosen/COLL             the newest value known chosen
 *   refs/opt/proposals/COLL          the write-ahead record of an accept
 *   refs/opt/peers/PEER/acceptors/REG  a view: PEER's state as last seen
 *   refs/opt/sync/quorum/PEER/REG    the staging ref of a state's push */
#define NS "refs/opt/"
#define REF_COLL NS "collections/"
#define REF_REMOTES NS "remotes/"
#define REF_INCOMING NS "incoming/"
#define REF_BACKUP NS "sync/backup/"
#define REF_PUSH NS "sync/push/"
#define REF_NOWHERE NS "sync/none/"
#define REF_ACCEPTORS NS "acceptors/"
#define REF_CHOSEN NS "chosen/"
#define REF_PROPOSALS NS "proposals/"
#define REF_PEERS NS "peers/"
#define REF_QSTAGE NS "sync/quorum/"

/* ---- the ref namespace ---- */

static int fits(int len, size_t n)
{
	if (len < 0 || (size_t)len >= n)
		return opt_error_set(OPT_EINVAL, "ref name too long");
	return 0;
}

int opt_ref_collection(char *buf, size_t n, const char *coll)
{
	return fits(snprintf(buf, n, REF_COLL "%s", coll ? coll : ""), n);
}

/* prefix, then "REMOTE/" and COLL when given */
static int two_level(char *buf, size_t n, const char *prefix, const char *remote, const char *coll)
{
	if (!remote)
		return fits(snprintf(buf, n, "%s", prefix), n);
	return fits(snprintf(buf, n, "%s%s/%s", prefix, remote, coll ? coll : ""), n);
}

int opt_ref_tracking(char *buf, size_t n, const char *remote, const char *coll)
{
	return two_level(buf, n, REF_REMOTES, remote, coll);
}

int opt_ref_incoming(char *buf, size_t n, const char *remote, const char *coll)
{
	return two_level(buf, n, REF_INCOMING, remote, coll);
}

int opt_ref_backup(char *buf, size_t n, const char *coll)
{
	return fits(snprintf(buf, n, REF_BACKUP "%s", coll ? coll : ""), n);
}

int opt_ref_push(char *buf, size_t n, const char *coll)
{
	return fits(snprintf(buf, n, REF_PUSH "%s", coll ? coll : ""), n);
}

int opt_ref_acceptor(char *buf, size_t n, const char *reg)
{
	return fits(snprintf(buf, n, REF_ACCEPTORS "%s", reg ? reg : ""), n);
}

int opt_ref_chosen(char *buf, size_t n, const char *coll)
{
	return fits(snprintf(buf, n, REF_CHOSEN "%s", coll ? coll : ""), n);
}

int opt_ref_proposal(char *buf, size_t n, const char *coll)
{
	return fits(snprintf(buf, n, REF_PROPOSALS "%s", coll ? coll : ""), n);
}

int opt_ref_peer_acceptor(char *buf, size_t n, const char *peer, const char *reg)
{
	if (!peer)
		return fits(snprintf(buf, n, "%s", REF_PEERS), n);
	return fits(snprintf(buf, n, REF_PEERS "%s/acceptors/%s", peer, reg ? reg : ""), n);
}

int opt_ref_quorum_stage(char *buf, size_t n, const char *peer, const char *reg)
{
	return two_level(buf, n, REF_QSTAGE, peer, reg);
}

const char *opt_ref_nowhere(void)
{
	return REF_NOWHERE;
}

const char *opt_ref_under(const char *ref, const char *prefix)
{
	size_t pl = strlen(prefix);

	return strncmp(ref, prefix, pl) == 0 ? ref + pl : NULL;
}

const char *opt_ref_collection_name(const char *ref)
{
	return opt_ref_under(ref, REF_COLL);
}

/* ---- reading and moving refs ---- */

const git_oid opt_ref_any_oid;

int opt_ref_read(git_repository *repo, const char *name, git_oid *out)
{
	int rc = git_reference_name_to_id(out, repo, name);

	if (rc == GIT_ENOTFOUND) {
		git_error_clear();
		return 0;
	}
	return rc < 0 ? opt_git_fail(OPT_EIO, "cannot read ref") : 1;
}

int opt_ref_foreach(git_repository *repo, const char *prefix, opt_ref_fn cb, void *arg, const char *what)
{
	git_reference_iterator *it = NULL;
	git_reference *ref = NULL, *res;
	char glob[OPT_REF_MAX + 2];
	int rc, err;

	snprintf(glob, sizeof(glob), "%s*", prefix ? prefix : "");
	if ((prefix ? git_reference_iterator_glob_new(&it, repo, glob) : git_reference_iterator_new(&it, repo)) < 0)
		return opt_git_fail(OPT_EIO, what);
	rc = 0;
	while (rc == 0 && (err = git_reference_next(&ref, it)) == 0) {
		res = NULL;
		if (git_reference_resolve(&res, ref) < 0)
			rc = opt_git_fail(OPT_EIO, "cannot read ref");
		else
			rc = cb(git_reference_name(ref), git_reference_target(res), arg);
		git_reference_free(res);
		git_reference_free(ref);
	}
	git_reference_iterator_free(it);
	if (rc == 0 && err != GIT_ITEROVER)
		return opt_git_fail(OPT_EIO, what);
	git_error_clear();
	return rc;
}

int opt_ref_locked(git_repository *repo, const char *name)
{
	char path[PATH_MAX];
	struct stat st;

	snprintf(path, sizeof(path), "%s%s.lock", git_repository_path(repo), name);
	return stat(path, &st) == 0;
}

void opt_ref_break_stale_lock(git_repository *repo, const char *name)
{
	char path[PATH_MAX];
	struct stat st;
	struct timespec now;
	const char *e = getenv("OPT_STALE_LOCK_MS");
	long stale = e && *e ? atol(e) : 5000;
	double age;

	snprintf(path, sizeof(path), "%s%s.lock", git_repository_path(repo), name);
	if (stat(path, &st) < 0)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	age = (double)(now.tv_sec - st.st_mtim.tv_sec) * 1000.0 +
	      (double)(now.tv_nsec - st.st_mtim.tv_nsec) / 1e6;
	if (age > (double)stale)
		unlink(path);
}

/* One attempt at the compare-and-swap: libgit2's code (GIT_ELOCKED,
 * GIT_EMODIFIED, ...), or 1 for "absent, and it had to be there". */
static int cas_once(git_repository *repo, const char *name, const git_oid *old, const git_oid *new,
		    const char *log)
{
	git_reference *r = NULL;
	git_oid zero;
	int rc;

	git_error_clear();
	if (new) {
		memset(&zero, 0, sizeof(zero));
		if (old == OPT_REF_ANY)
			rc = git_reference_create(&r, repo, name, new, 1, log);
		else
			rc = git_reference_create_matching(&r, repo, name, new, 1, old ? old : &zero, log);
		git_reference_free(r);
		return rc;
	}
	rc = git_reference_lookup(&r, repo, name);
	if (rc == GIT_ENOTFOUND)
		return old && old != OPT_REF_ANY ? 1 : 0;
	if (rc == 0) {
		if (old != OPT_REF_ANY && (!old || !git_oid_equal(git_reference_target(r), old)))
			rc = GIT_EMODIFIED;
		else
			rc = git_reference_delete(r);
	}
	git_reference_free(r);
	return rc;
}

static int busy(const char *name)
{
	const char *coll = opt_ref_collection_name(name);

	if (coll)
		return opt_error_set(OPT_EBUSY, "collection '%s' is busy (its ref is locked: %s.lock)", coll, name);
	return opt_error_set(OPT_EBUSY, "ref '%s' stayed locked", name);
}

int opt_ref_cas(git_repository *repo, const char *name, const git_oid *old, const git_oid *new, const char *log,
		int64_t deadline)
{
	unsigned tries = 0;
	int rc;

	for (;;) {
		rc = cas_once(repo, name, old, new, log ? log : "opt");
		if (rc == 0)
			return 0;
		if (rc == 1)
			return opt_error_set(OPT_ECONFLICT, "ref '%s' is gone", name);
		if (rc == GIT_EMODIFIED || rc == GIT_EEXISTS || (rc == GIT_ENOTFOUND && old))
			return opt_error_set(OPT_ECONFLICT, "ref '%s' changed meanwhile", name);
		if (rc != GIT_ELOCKED)
			return opt_git_fail(OPT_EIO, "cannot update ref");
		if (opt_now_ms() >= deadline)
			return busy(name);
		opt_sleep_ms(opt_backoff_ms(tries < 8 ? tries : 8, 2, 100));
		tries++;
	}
}

/* Lock every ref of u in tx: 0, GIT_ELOCKED, or OPT_EIO. */
static int lock_all(git_transaction *tx, const struct opt_ref_update *u, size_t n)
{
	size_t i;
	int rc;

	for (i = 0; i < n; i++) {
		git_error_clear();
		if ((rc = git_transaction_lock_ref(tx, u[i].name)) == GIT_ELOCKED)
			return rc;
		if (rc < 0)
			return opt_git_fail(OPT_EIO, "cannot lock refs");
	}
	return 0;
}

/* With every ref locked: check each one's value and set its new one. */
static int check_and_set(git_repository *repo, git_transaction *tx, const struct opt_ref_update *u, size_t n,
			 size_t *failed)
{
	git_oid cur;
	size_t i;
	int has, rc;

	for (i = 0; i < n; i++) {
		if ((has = opt_ref_read(repo, u[i].name, &cur)) < 0)
			return has;
		if (u[i].old != OPT_REF_ANY && (has != (u[i].old != NULL) || (has && !git_oid_equal(&cur, u[i].old)))) {
			if (failed)
				*failed = i;
			return opt_error_set(OPT_ECONFLICT, "ref '%s' changed meanwhile", u[i].name);
		}
		if (u[i].new)
			rc = git_transaction_set_target(tx, u[i].name, u[i].new, NULL, u[i].log ? u[i].log : "opt");
		else
			rc = has ? git_transaction_remove(tx, u[i].name) : 0;
		if (rc < 0)
			return opt_git_fail(OPT_EIO, "cannot move refs");
	}
	if (git_transaction_commit(tx) < 0)
		return opt_git_fail(OPT_EIO, "cannot move refs");
	return 0;
}

int opt_ref_cas_many(git_repository *repo, const struct opt_ref_update *u, size_t n, int64_t deadline,
		     size_t *failed)
{
	unsigned tries = 0;
	int rc;

	for (;;) {
		git_transaction *tx = NULL;

		if (git_transaction_new(&tx, repo) < 0)
			return opt_git_fail(OPT_EIO, "cannot move refs");
		rc = lock_all(tx, u, n);
		if (rc == 0)
			rc = check_and_set(repo, tx, u, n, failed);
		git_transaction_free(tx);
		if (rc != GIT_ELOCKED)
			return rc;
		if (opt_now_ms() >= deadline)
			return opt_error_set(OPT_EBUSY, "collections stayed locked by other writers");
		opt_sleep_ms(opt_backoff_ms(tries < 8 ? tries : 8, 2, 200));
		tries++;
	}
}

/* ---- trailers ---- */

static int add_line(char *buf, size_t n, const char *key, const char *fmt_value)
{
	size_t len = strlen(buf);

	return fits(snprintf(buf + len, n - len, "%s: %s\n", key, fmt_value), n - len);
}

int opt_trailers_format(char *buf, size_t n, const struct opt_trailers *t)
{
	char num[32];
	int rc = 0;

	if (t->rev > 0) {
		snprintf(num, sizeof(num), "%ld", t->rev);
		rc = add_line(buf, n, "Opt-Rev", num);
	}
	if (rc == 0 && t->trx)
		rc = add_line(buf, n, "Opt-Trx", t->trx);
	if (rc == 0 && t->status)
		rc = add_line(buf, n, "Opt-Status", t->status);
	if (rc == 0 && t->primary)
		rc = add_line(buf, n, "Opt-Primary", t->primary);
	if (rc == 0 && t->collections)
		rc = add_line(buf, n, "Opt-Collections", t->collections);
	if (rc == 0 && t->has_expires) {
		snprintf(num, sizeof(num), "%lld", (long long)t->expires);
		rc = add_line(buf, n, "Opt-Expires", num);
	}
	if (rc == 0 && t->primary_base)
		rc = add_line(buf, n, "Opt-Primary-Base", t->primary_base);
	return rc;
}

/* The value of key in msg: a pointer to it and its length, or NULL. */
static const char *trailer_find(const char *msg, const char *key, size_t *len)
{
	size_t kl = strlen(key);
	const char *p = msg;

	while (p && *p) {
		if (strncmp(p, key, kl) == 0 && p[kl] == ':') {
			const char *v = p + kl + 1, *e;
			while (*v == ' ')
				v++;
			e = strchr(v, '\n');
			*len = e ? (size_t)(e - v) : strlen(v);
			return v;
		}
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return NULL;
}

char *opt_trailer_value(const char *msg, const char *key)
{
	size_t len;
	const char *v = trailer_find(msg, key, &len);

	return v ? strndup(v, len) : NULL;
}

/* Copy the value of key into t->buf_ at *pos: the copy, or NULL. */
static const char *parse_field(struct opt_trailers *t, size_t *pos, const char *msg, const char *key)
{
	size_t len;
	const char *v = trailer_find(msg, key, &len);
	char *out;

	if (!v)
		return NULL;
	out = t->buf_ + *pos;
	memcpy(out, v, len);
	out[len] = '\0';
	*pos += len + 1;
	return out;
}

int opt_trailers_parse(struct opt_trailers *t, const char *msg)
{
	const char *v;
	size_t pos = 0;

	memset(t, 0, sizeof(*t));
	/* every value is a part of msg: one buffer of its size holds them */
	t->buf_ = malloc(strlen(msg) + 8);
	OPT_CHECK_ALLOC(t->buf_);
	v = parse_field(t, &pos, msg, "Opt-Rev");
	t->rev = v ? strtol(v, NULL, 10) : 0;
	t->trx = parse_field(t, &pos, msg, "Opt-Trx");
	t->status = parse_field(t, &pos, msg, "Opt-Status");
	t->primary = parse_field(t, &pos, msg, "Opt-Primary");
	t->collections = parse_field(t, &pos, msg, "Opt-Collections");
	if ((v = parse_field(t, &pos, msg, "Opt-Expires"))) {
		t->has_expires = 1;
		t->expires = strtoll(v, NULL, 10);
	}
	t->primary_base = parse_field(t, &pos, msg, "Opt-Primary-Base");
	return 0;
}

void opt_trailers_release(struct opt_trailers *t)
{
	free(t->buf_);
	memset(t, 0, sizeof(*t));
}
