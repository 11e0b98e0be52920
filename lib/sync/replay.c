/* replay.c - replay of our transactions on top of a remote head: reading
 * histories, the plan, the resolver program, moving heads, running the
 * replay. */
#include "internal.h"
#include "chain.h"
#include "collection.h"
#include "error.h"
#include "identity.h"
#include "json.h"
#include "pack.h"
#include "txn.h"
#include "util.h"
#include "verify.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- reading histories ---- */

/* The log entries of collection name at commit `at` with a revision after
 * `after`, oldest first: *out a new array (of copies). */
static int read_entries(struct opt_sync *y, const char *name, const git_oid *at, long after, json_t **out)
{
	struct opt_snap *snap = NULL;
	struct opt_source src;
	struct opt_chain_iter *it = NULL;
	const json_t *e;
	char hex[GIT_OID_HEXSZ + 1], hid[OPT_ID_LEN + 1];
	json_t *rev = json_array(), *arr = NULL;
	size_t i;
	int rc;

	*out = NULL;
	if (!rev)
		return opt_error_set(OPT_EIO, "out of memory");
	sync_hex_of(hex, at);
	if ((rc = opt_snap_open_commit(&snap, y->s, name, hex)) < 0)
		goto done;
	src = opt_snap_source(snap);
	opt_collection_header_id(name, hid);
	rc = opt_chain_iter_open(&it, &src, hid, 0);
	if (rc == OPT_ENOTFOUND) {
		opt_error_clear();
		rc = 0;
		goto out;
	}
	if (rc < 0)
		goto done;
	while ((rc = opt_chain_iter_next(it, &e)) == 1) {
		const json_t *r = json_object_get(e, "rev");
		if (!json_is_integer(r)) {
			rc = opt_error_set(OPT_EINTEGRITY, "collection '%s': a log entry without a revision", name);
			goto done;
		}
		if (json_integer_value(r) <= after)
			break;
		json_array_append_new(rev, opt_json_copy(e));
	}
	if (rc < 0)
		goto done;
out:
	arr = json_array();
	for (i = json_array_size(rev); arr && i > 0; i--)
		json_array_append(arr, json_array_get(rev, i - 1));
	*out = arr;
	rc = arr ? 0 : opt_error_set(OPT_EIO, "out of memory");
done:
	opt_chain_iter_free(it);
	opt_snap_free(snap);
	json_decref(rev);
	return rc;
}

/* The transactions in the history of `head` after revision `after`,
 * whichever way they arrived (written there, pushed, pulled, replayed):
 * {trx: true} into set.  A replay keeps a transaction's ID, so none of
 * them is applied there again (docs/quorum.md, "The change function"). */
static int trx_after(struct opt_sync *y, const char *name, const git_oid *head, long after, json_t *set)
{
	json_t *entries = NULL;
	size_t i;
	int rc;

	if ((rc = read_entries(y, name, head, after, &entries)) < 0)
		return rc;
	for (i = 0; i < json_array_size(entries); i++) {
		const char *trx = json_string_value(json_object_get(json_array_get(entries, i), "trx"));
		if (trx && json_object_set_new(set, trx, json_true()) < 0) {
			rc = opt_error_oom();
			break;
		}
	}
	json_decref(entries);
	return rc;
}

int sync_base_of(struct opt_sync *y, const char *name, const git_oid *a, const git_oid *b, long *rev)
{
	git_oid mb;
	int rc = git_merge_base(&mb, y->repo, a, b);

	*rev = 0;
	if (rc == GIT_ENOTFOUND) {
		git_error_clear();
		return 0;
	}
	if (rc < 0)
		return opt_git_fail(OPT_EIO, "cannot find the common base");
	*rev = sync_rev_of(y, name, &mb);
	return 0;
}

static int is_tree_or_diary_action(const char *t)
{
	return strcmp(t, "put") == 0 || strcmp(t, "del") == 0 || strcmp(t, "append") == 0;
}

/* Is entry e of c->name one of ours to replay: 1 yes, 0 no (no
 * transaction, reverted, aborted, in done, or decided aborted by its
 * primary), <0 when it cannot be told (pending without a primary; in
 * flight unless report). */
static int ours_live(struct opt_sync *y, struct coll *c, const json_t *e, json_t *done, int report)
{
	const char *st = json_string_value(json_object_get(e, "status"));
	const char *trx = json_string_value(json_object_get(e, "trx"));
	const char *primary;
	int d = 0, rc;

	if (!trx)
		return 0;
	if (json_object_get(e, "revert") || (st && strcmp(st, "aborted") == 0))
		return 0;
	if (done && json_object_get(done, trx))
		return 0;
	if (!st || strcmp(st, "pending") != 0)
		return 1;
	if (!(primary = json_string_value(json_object_get(e, "primary"))))
		return opt_error_set(OPT_EINTEGRITY, "collection '%s' revision %ld is pending without a primary", c->name,
				     (long)json_integer_value(json_object_get(e, "rev")));
	if ((rc = opt_store__decision_of(y->s, primary, trx, json_integer_value(json_object_get(e, "time")) / 1000,
					  &d)) < 0)
		return rc;
	if (d == -1)
		return 0;
	if (d == 0 && !report)
		return opt_error_set(OPT_EBUSY, "collection '%s': transaction %s is in flight; sync again later", c->name,
				     trx);
	return 1;
}

/* The actions of entry e (revision rev) to replay, checkpoints left out:
 * 1 and *keep (none: 0); with report every action, pruned ones none, else
 * OPT_ECONFLICT for actions that cannot be replayed. */
static int ours_actions(struct coll *c, const json_t *e, long rev, int report, json_t **keep)
{
	const json_t *acts = json_object_get(e, "actions");
	size_t j;

	*keep = NULL;
	if (!json_is_array(acts)) {
		if (report)
			return 0;
		return opt_error_set(OPT_ECONFLICT, "collection '%s': cannot replay revision %ld: its actions were "
				     "pruned by a checkpoint", c->name, rev);
	}
	*keep = json_array();
	for (j = 0; j < json_array_size(acts); j++) {
		const json_t *a = json_array_get(acts, j);
		const char *t = json_string_value(json_object_get(a, "type"));
		if (t && strcmp(t, "checkpoint") == 0)
			continue;
		if (!report && (!t || !is_tree_or_diary_action(t))) {
			json_decref(*keep);
			*keep = NULL;
			return opt_error_set(OPT_ECONFLICT, "collection '%s': cannot replay block-level actions ('%.40s' "
					     "at revision %ld); use --conflict keep-remote or fail", c->name, t ? t : "?", rev);
		}
		json_array_append(*keep, (json_t *)a);
	}
	if (json_array_size(*keep) == 0) {
		json_decref(*keep);
		*keep = NULL;
		return 0;
	}
	return 1;
}

/* Our transactions to replay: the entries of c->name at `from` after the
 * base, as committed (aborted and reverted ones left out), minus the ones
 * in done.  report: keep every action (for --conflict=fail), refuse
 * nothing. */
static int plan_ours(struct opt_sync *y, struct coll *c, const git_oid *from, json_t *done, int report)
{
	json_t *entries = NULL, *out = json_array();
	size_t i;
	int rc;

	if (!out)
		return opt_error_set(OPT_EIO, "out of memory");
	if ((rc = read_entries(y, c->name, from, c->base_rev, &entries)) < 0)
		goto done;
	for (i = 0; i < json_array_size(entries); i++) {
		const json_t *e = json_array_get(entries, i), *cols;
		long rev = (long)json_integer_value(json_object_get(e, "rev"));
		json_t *keep, *rec;

		if ((rc = ours_live(y, c, e, done, report)) <= 0) {
			if (rc < 0)
				goto done;
			continue;
		}
		if ((rc = ours_actions(c, e, rev, report, &keep)) <= 0) {
			if (rc < 0)
				goto done;
			continue;
		}
		rec = json_pack("{s:s,s:o,s:I}", "trx", json_string_value(json_object_get(e, "trx")), "actions", keep, "rev",
				(json_int_t)rev);
		cols = json_object_get(e, "collections");
		if (rec && json_is_array(cols) && json_array_size(cols) > 1)
			json_object_set(rec, "collections", (json_t *)cols);
		json_array_append_new(out, rec);
	}
	json_decref(c->ours);
	c->ours = out;
	out = NULL;
	rc = 0;
done:
	json_decref(out);
	json_decref(entries);
	return rc;
}

/* Their actions since the base (at c->T). */
static int plan_theirs(struct opt_sync *y, struct coll *c, const git_oid *at)
{
	json_t *entries = NULL, *out = json_array();
	size_t i, j;
	int rc;

	if (!out)
		return opt_error_set(OPT_EIO, "out of memory");
	if ((rc = read_entries(y, c->name, at, c->base_rev, &entries)) < 0) {
		json_decref(out);
		return rc;
	}
	for (i = 0; i < json_array_size(entries); i++) {
		const json_t *acts = json_object_get(json_array_get(entries, i), "actions");
		for (j = 0; j < json_array_size(acts); j++)
			json_array_append(out, json_array_get(acts, j));
	}
	json_decref(entries);
	json_decref(c->theirs);
	c->theirs = out;
	return 0;
}

/* The kind ("tree", "diary", "block") of collection name at commit at. */
static int kind_at(struct opt_sync *y, const char *name, const git_oid *at, const char **kind)
{
	struct opt_snap *snap = NULL;
	char hex[GIT_OID_HEXSZ + 1];
	const char *k = NULL;
	int rc;

	*kind = "unknown";
	sync_hex_of(hex, at);
	if ((rc = opt_snap_open_commit(&snap, y->s, name, hex)) < 0)
		return rc;
	rc = opt_coll_kind(snap, &k);
	if (rc == 0 && k)
		*kind = strcmp(k, "tree") == 0 ? "tree" : strcmp(k, "diary") == 0 ? "diary" : "block collection";
	opt_snap_free(snap);
	return rc;
}

/* The report of --conflict=fail for c. */
static json_t *report_of(const struct coll *c)
{
	json_t *ours = json_array();
	size_t i, j;

	for (i = 0; i < json_array_size(c->ours); i++) {
		const json_t *acts = json_object_get(json_array_get(c->ours, i), "actions");
		for (j = 0; j < json_array_size(acts); j++)
			json_array_append(ours, json_array_get(acts, j));
	}
	return json_pack("{s:s,s:I,s:o,s:O}", "collection", c->name, "base", (json_int_t)c->base_rev, "ours", ours,
			 "theirs", c->theirs ? c->theirs : json_array());
}

/* ---- the resolver program ---- */

/* input, one line, in a temporary file at its start: *in. */
static int resolver_input(const json_t *input, FILE **in)
{
	char *text = json_dumps(input, JSON_COMPACT | JSON_ENCODE_ANY);
	int rc = 0;

	if (!text || !(*in = tmpfile()) || fputs(text, *in) == EOF || fputc('\n', *in) == EOF || fflush(*in) == EOF ||
	    fseek(*in, 0, SEEK_SET) < 0)
		rc = opt_error_set(OPT_EIO, "cannot prepare the resolver's input: %s", strerror(errno));
	free(text);
	return rc;
}

/* Start prog (through /bin/sh -c), its stdin in, its stdout pfd[1]: the
 * child's pid (in the parent), <0 when it cannot start. */
static pid_t spawn(const char *prog, FILE *in, const int pfd[2])
{
	pid_t pid;

	fflush(stdout);
	if ((pid = fork()) != 0)
		return pid;
	/* the program gets the default SIGPIPE, whatever ours is */
	signal(SIGPIPE, SIG_DFL);
	dup2(fileno(in), 0);
	dup2(pfd[1], 1);
	close(pfd[0]);
	close(pfd[1]);
	execl("/bin/sh", "sh", "-c", prog, (char *)NULL);
	_exit(127);
}

/* Read fd to its end: *buf (NUL-terminated, *len bytes; to free). */
static int read_all(int fd, char **buf, size_t *len)
{
	size_t cap = 0;
	ssize_t n;

	for (;;) {
		if (OPT_ALLOC_GROW(*buf, *len + 4096, cap) < 0)
			return OPT_EIO;
		n = read(fd, *buf + *len, cap - *len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		*len += (size_t)n;
	}
	(*buf)[*len] = '\0';
	return 0;
}

/* What prog printed (buf): an action into *out, or null (*out NULL). */
static int resolver_action(const char *prog, const char *buf, size_t len, json_t **out)
{
	json_t *v = NULL;

	if (opt_json_parse(&v, buf, len) < 0)
		return opt_error_set(OPT_ECONFLICT, "the resolver '%.200s' printed no JSON action or null (%s)", prog,
				     opt_error_last());
	if (json_is_null(v)) {
		json_decref(v);
		return 0;
	}
	if (!json_is_object(v) || !json_is_string(json_object_get(v, "type"))) {
		json_decref(v);
		return opt_error_set(OPT_ECONFLICT, "the resolver '%.200s' printed something that is neither an action "
				     "nor null", prog);
	}
	*out = v;
	return 0;
}

/* Run prog (through /bin/sh -c) with input on stdin; *out its action, or
 * NULL to drop ours. */
static int run_resolver(const char *prog, const json_t *input, json_t **out)
{
	FILE *in = NULL;
	char *buf = NULL;
	size_t len = 0;
	int pfd[2] = { -1, -1 }, status, rc;
	pid_t pid;

	*out = NULL;
	if ((rc = resolver_input(input, &in)) < 0)
		goto done;
	if (pipe(pfd) < 0 || (pid = spawn(prog, in, pfd)) < 0) {
		rc = opt_error_set(OPT_EIO, "cannot run the resolver: %s", strerror(errno));
		goto done;
	}
	close(pfd[1]);
	pfd[1] = -1;
	rc = read_all(pfd[0], &buf, &len);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (rc < 0)
		goto done;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		rc = opt_error_set(OPT_ECONFLICT, "the resolver '%.200s' failed (%s %d)", prog,
				   WIFEXITED(status) ? "exit status" : "signal",
				   WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	else
		rc = resolver_action(prog, buf, len, out);
done:
	if (pfd[0] >= 0)
		close(pfd[0]);
	if (pfd[1] >= 0)
		close(pfd[1]);
	if (in)
		fclose(in);
	free(buf);
	return rc;
}

/* Pass every action of c->ours through the resolver. */
static int resolve_all(struct coll *c, const char *prog)
{
	size_t i, j;
	int rc;

	for (i = 0; i < json_array_size(c->ours); i++) {
		json_t *t = json_array_get(c->ours, i), *acts = json_object_get(t, "actions"), *na = json_array();
		for (j = 0; j < json_array_size(acts); j++) {
			json_t *in = json_pack("{s:s,s:O,s:O}", "collection", c->name, "local", json_array_get(acts, j),
					       "remote", c->theirs ? c->theirs : json_array()), *res = NULL;
			rc = in ? run_resolver(prog, in, &res) : opt_error_set(OPT_EIO, "out of memory");
			json_decref(in);
			if (rc < 0) {
				json_decref(na);
				return rc;
			}
			if (res)
				json_array_append_new(na, res);
		}
		json_object_set_new(t, "actions", na);
	}
	return 0;
}

/* ---- moving local heads ---- */

int sync_move_heads(struct opt_sync *y, struct coll **v, size_t n, int backup, int64_t deadline)
{
	struct opt_ref_update *u = calloc(2 * n + 1, sizeof(*u));
	char (*names)[REFLEN] = calloc(2 * n + 1, sizeof(*names));
	size_t i, k = 0, failed = 0;
	int rc;

	if (!u || !names) {
		rc = opt_error_oom();
		goto done;
	}
	for (i = 0; i < n; i++) {
		opt_ref_collection(names[k], REFLEN, v[i]->name);
		u[k].name = names[k];
		u[k].old = v[i]->has_L ? &v[i]->L : NULL;
		u[k].new = &v[i]->T;
		u[k++].log = "opt-sync: to the remote head";
		if (!backup)
			continue;
		/* no replay in progress: the backup ref is absent */
		opt_ref_backup(names[k], REFLEN, v[i]->name);
		u[k].name = names[k];
		u[k].new = v[i]->has_L ? &v[i]->L : NULL;
		u[k++].log = "opt-sync: replay backup";
	}
	rc = opt_ref_cas_many(y->repo, u, k, deadline, &failed);
	if (rc == OPT_ECONFLICT && failed < k) {
		i = backup ? failed / 2 : failed;
		if (backup && failed % 2)
			rc = opt_error_set(OPT_ECONFLICT, "collection '%s' has a replay in progress", v[i]->name);
		else
			rc = opt_error_set(OPT_ECONFLICT, "collection '%s' changed meanwhile", v[i]->name);
	}
done:
	free(u);
	free(names);
	return rc;
}

/* ---- running a replay ---- */

/* A replay of backups: what it holds from start to end. */
struct replay {
	struct opt_sync *y;
	const char *remote, *policy;
	const struct opt_sync_opts *o;
	struct coll *cs;             /* the collections with a backup */
	size_t nc;
	json_t *queues;              /* collection -> [trx, ...] in its order */
	json_t *docs;                /* trx -> {"collections": {name: actions}} */
};

/* The collection of c->name with a backup: its backup B, head L, common
 * base, and the plan of ours: prepared (planned and resolved before the
 * move), or read again minus what was replayed already. */
static int gather_one(struct replay *p, struct coll *c, json_t *prepared)
{
	char ref[REFLEN], bref[REFLEN];
	json_t *d;
	int has = 0, rc;

	opt_ref_collection(ref, sizeof(ref), c->name);
	opt_ref_backup(bref, sizeof(bref), c->name);
	if ((rc = opt_ref_read(p->y->repo, bref, &c->B)) < 0 || (has = opt_ref_read(p->y->repo, ref, &c->L)) < 0)
		return rc < 0 ? rc : has;
	if (!(c->has_L = has))
		return opt_error_set(OPT_EINTEGRITY, "collection '%s' is gone while its replay is pending", c->name);
	if ((rc = sync_base_of(p->y, c->name, &c->B, &c->L, &c->base_rev)) < 0)
		return rc;
	if (prepared && json_object_get(prepared, c->name)) {
		c->ours = json_incref(json_object_get(prepared, c->name));
		return 0;
	}
	OPT_CHECK_ALLOC(d = json_object());
	if ((rc = trx_after(p->y, c->name, &c->L, c->base_rev, d)) == 0 && (rc = plan_ours(p->y, c, &c->B, d, 0)) == 0)
		rc = plan_theirs(p->y, c, &c->L);
	json_decref(d);
	if (rc == 0 && p->policy && strncmp(p->policy, "exec:", 5) == 0)
		rc = resolve_all(c, p->policy + 5);
	return rc;
}

/* Queue c's transactions; gather each one's parts. */
static void queue_one(struct replay *p, const struct coll *c)
{
	json_t *q = json_array();
	size_t j;

	json_object_set_new(p->queues, c->name, q);
	for (j = 0; j < json_array_size(c->ours); j++) {
		json_t *t = json_array_get(c->ours, j), *doc, *cols;
		const char *trx = json_string_value(json_object_get(t, "trx"));
		if (json_array_size(json_object_get(t, "actions")) == 0)
			continue;
		doc = json_object_get(p->docs, trx);
		if (!doc) {
			doc = json_pack("{s:{}}", "collections");
			json_object_set_new(p->docs, trx, doc);
		}
		cols = json_object_get(doc, "collections");
		json_object_set(cols, c->name, json_object_get(t, "actions"));
		json_array_append_new(q, json_string(trx));
	}
}

/* Every collection with a backup among names (NULL: all), planned and
 * queued. */
static int gather(struct replay *p, const json_t *names, json_t *prepared)
{
	json_t *all = NULL;
	char prefix[REFLEN];
	size_t i;
	int rc;

	opt_ref_backup(prefix, sizeof(prefix), NULL);
	if ((rc = sync_refs_under(p->y->repo, prefix, &all)) < 0)
		return rc;
	if (!(p->cs = calloc(json_array_size(all) + 1, sizeof(*p->cs))))
		rc = opt_error_oom();
	for (i = 0; rc == 0 && i < json_array_size(all); i++) {
		const char *name = json_string_value(json_array_get(all, i));
		struct coll *c = &p->cs[p->nc];
		if ((names && !sync_has_string(names, name)) || !opt_store_name_valid(name))
			continue;
		c->name = strdup(name);
		p->nc++;
		if ((rc = gather_one(p, c, prepared)) == 0)
			queue_one(p, c);
	}
	json_decref(all);
	return rc;
}

/* 1 when trx is first in the queue of every collection it has a part in. */
static int ready(struct replay *p, const char *trx)
{
	json_t *cols = json_object_get(json_object_get(p->docs, trx), "collections"), *unused;
	const char *cn;

	json_object_foreach(cols, cn, unused) {
		json_t *oq = json_object_get(p->queues, cn);
		if (!json_array_size(oq) || strcmp(json_string_value(json_array_get(oq, 0)), trx) != 0)
			return 0;
	}
	return 1;
}

/* Run trx again ("replay <trx>"), keeping its ID, off the queues. */
static int run_one(struct replay *p, const char *trx)
{
	json_t *doc = json_object_get(p->docs, trx), *cols = json_object_get(doc, "collections"), *out = NULL, *unused;
	char summary[64], msg[1024];
	struct opt_txn_opts to = { NULL, summary, p->o ? p->o->busy_timeout_ms : 0, 0 };
	const char *cn;
	size_t j;
	int rc;

	snprintf(summary, sizeof(summary), REPLAY_PREFIX "%s", trx);
	rc = opt_txdoc_run_keep(p->y->s, doc, &to, trx, &out);
	json_decref(out);
	if (rc < 0) {
		snprintf(msg, sizeof(msg), "%s", opt_error_last());
		if (rc == OPT_EINVAL || rc == OPT_ENOTFOUND)
			rc = OPT_ECONFLICT;
		return opt_error_set(rc, "cannot replay transaction %s: %s", trx, msg);
	}
	/* (trx goes with the first queue it leaves) */
	json_object_foreach(cols, cn, unused) {
		json_array_remove(json_object_get(p->queues, cn), 0);
		for (j = 0; j < p->nc; j++)
			if (strcmp(p->cs[j].name, cn) == 0)
				p->cs[j].replayed++;
	}
	return 0;
}

/* Run them: each when it is first in the queue of every collection it
 * has a part in (the order of each collection stays). */
static int run_queues(struct replay *p)
{
	size_t i;
	int rc;

	for (;;) {
		int ran = 0, left = 0;
		for (i = 0; i < p->nc; i++) {
			json_t *q = json_object_get(p->queues, p->cs[i].name);
			while (json_array_size(q) > 0 && ready(p, json_string_value(json_array_get(q, 0)))) {
				if ((rc = run_one(p, json_string_value(json_array_get(q, 0)))) < 0)
					return rc;
				ran = 1;
			}
			left += json_array_size(q) > 0;
		}
		if (!left)
			return 0;
		if (!ran)
			return opt_error_set(OPT_ECONFLICT, "cannot order the replay of multi-collection transactions");
	}
}

/* Done: drop the backups; a record each, or with counts the number of
 * transactions replayed per collection. */
static int finish(struct replay *p, json_t *counts, int64_t deadline)
{
	char ref[REFLEN], bref[REFLEN];
	git_oid head;
	size_t i;
	int rc;

	for (i = 0; i < p->nc; i++) {
		const struct coll *c = &p->cs[i];
		opt_ref_backup(bref, sizeof(bref), c->name);
		opt_ref_collection(ref, sizeof(ref), c->name);
		if ((rc = opt_ref_cas(p->y->repo, bref, &c->B, NULL, "opt-sync", deadline)) < 0 ||
		    (rc = opt_ref_read(p->y->repo, ref, &head)) < 0)
			return rc;
		if (counts) {
			/* the caller reports */
			json_object_set_new(counts, c->name, json_integer(c->replayed));
			continue;
		}
		if ((rc = opt_sync_emit_rec(p->o, json_pack("{s:s,s:s,s:I,s:s,s:I}", "remote", p->remote, "collection", c->name,
							  "rev", (json_int_t)(rc ? sync_rev_of(p->y, c->name, &head) : 0),
							  "status", "replayed", "replayed", (json_int_t)c->replayed))) != 0)
			return rc;
	}
	return 0;
}

int sync_replay_backups(struct opt_sync *y, const char *remote, const json_t *names, const char *policy,
			const struct opt_sync_opts *o, json_t *counts, json_t *prepared)
{
	struct replay p;
	int64_t deadline = opt_now_ms() + sync_busy_timeout(o);
	size_t i;
	int rc;

	memset(&p, 0, sizeof(p));
	p.y = y;
	p.remote = remote;
	p.policy = policy;
	p.o = o;
	p.queues = json_object();
	p.docs = json_object();
	if (!p.queues || !p.docs)
		rc = opt_error_oom();
	else if ((rc = gather(&p, names, prepared)) == 0 && (rc = run_queues(&p)) == 0)
		rc = finish(&p, counts, deadline);
	for (i = 0; p.cs && i < p.nc; i++)
		sync_coll_clear(&p.cs[i]);
	free(p.cs);
	json_decref(p.queues);
	json_decref(p.docs);
	return rc;
}

int sync_reconcile(struct opt_sync *y, const char *remote, struct coll **v, size_t n, const struct opt_sync_opts *o,
		   int64_t deadline, json_t *counts)
{
	const char *policy = o && o->conflict ? o->conflict : "replay";
	json_t *names = NULL, *prepared = NULL, *done;
	size_t i;
	int rc = 0;

	if (n == 0)
		return 0;
	for (i = 0; i < n; i++) {
		const char *kl = NULL, *kt = NULL;
		if ((rc = sync_base_of(y, v[i]->name, &v[i]->L, &v[i]->T, &v[i]->base_rev)) < 0)
			return rc;
		if (strcmp(policy, "keep-remote") == 0)
			continue;
		if ((rc = kind_at(y, v[i]->name, &v[i]->L, &kl)) < 0 || (rc = kind_at(y, v[i]->name, &v[i]->T, &kt)) < 0)
			return rc;
		if (strcmp(kl, kt) != 0 && strcmp(policy, "fail") != 0)
			return opt_error_set(OPT_ECONFLICT, "collection '%s' is a %s here and a %s at remote '%s': it cannot be "
					     "replayed (--conflict keep-remote takes theirs)", v[i]->name, kl, kt, remote);
		if (!(done = json_object()))
			return opt_error_oom();
		if ((rc = trx_after(y, v[i]->name, &v[i]->T, v[i]->base_rev, done)) == 0)
			rc = plan_ours(y, v[i], &v[i]->L, done, strcmp(policy, "fail") == 0);
		json_decref(done);
		if (rc < 0 || (rc = plan_theirs(y, v[i], &v[i]->T)) < 0)
			return rc;
	}
	if (strcmp(policy, "fail") == 0) {
		for (i = 0; i < n; i++)
			if ((rc = opt_sync_emit_rec(o, report_of(v[i]))) != 0)
				return rc;
		return opt_error_set(OPT_ECONFLICT, "%s '%s' %s diverged from remote '%s' (--conflict fail)",
				     n == 1 ? "collection" : "collections", v[0]->name,
				     n == 1 ? "has" : "and others have", remote);
	}
	if (o && o->dry_run) {
		for (i = 0; i < n; i++) {
			json_t *rec = json_pack("{s:s,s:s,s:I,s:s,s:b}", "remote", remote, "collection", v[i]->name, "rev",
						(json_int_t)sync_rev_of(y, v[i]->name, &v[i]->L), "status",
						strcmp(policy, "keep-remote") == 0 ? "kept-remote" : "replayed", "dry_run", 1);
			if (rec && v[i]->ours)
				json_object_set_new(rec, "replayed", json_integer((json_int_t)json_array_size(v[i]->ours)));
			if ((rc = opt_sync_emit_rec(o, rec)) != 0)
				return rc;
		}
		return 0;
	}
	if (strcmp(policy, "keep-remote") == 0) {
		if ((rc = sync_move_heads(y, v, n, 0, deadline)) < 0)
			return rc;
		for (i = 0; i < n; i++)
			if ((rc = opt_sync_emit_rec(o, json_pack("{s:s,s:s,s:I,s:s}", "remote", remote, "collection", v[i]->name, "rev",
						    (json_int_t)sync_rev_of(y, v[i]->name, &v[i]->T), "status", "kept-remote"))) != 0)
				return rc;
		return 0;
	}
	/* the resolver decides before anything moves: a failing resolver
	 * changes nothing */
	prepared = json_object();
	for (i = 0; i < n; i++) {
		if (strncmp(policy, "exec:", 5) == 0 && (rc = resolve_all(v[i], policy + 5)) < 0) {
			json_decref(prepared);
			return rc;
		}
		json_object_set(prepared, v[i]->name, v[i]->ours);
	}
	if ((rc = sync_move_heads(y, v, n, 1, deadline)) < 0) {
		json_decref(prepared);
		return rc;
	}
	names = json_array();
	for (i = 0; i < n; i++)
		json_array_append_new(names, json_string(v[i]->name));
	rc = sync_replay_backups(y, remote, names, policy, o, counts, prepared);
	json_decref(names);
	json_decref(prepared);
	return rc;
}

int sync_resume(struct opt_sync *y, const char *remote, const struct opt_sync_opts *o, json_t *counts)
{
	json_t *all = NULL;
	char prefix[REFLEN];
	int rc;

	opt_ref_backup(prefix, sizeof(prefix), NULL);
	if ((rc = sync_refs_under(y->repo, prefix, &all)) < 0)
		return rc;
	if (json_array_size(all) > 0 && o && o->conflict && strcmp(o->conflict, "keep-remote") == 0 && !o->dry_run) {
		/* what was not replayed yet is dropped */
		rc = sync_delete_refs_under(y->repo, prefix);
	} else if (json_array_size(all) > 0 && !(o && o->dry_run)) {
		rc = sync_replay_backups(y, remote, NULL, o && o->conflict ? o->conflict : "replay", o, counts, NULL);
	}
	json_decref(all);
	return rc;
}
