/* opt-sync - peers: remotes, clone, fetch, pull and push of collections,
 * every transfer verified before a ref moves, every push a
 * compare-and-swap at the receiving side, conflicts replayed. */
#include "bundle.h"
#include "cluster.h"
#include "common.h"
#include "identity.h"
#include "sync.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The values of the options (each row of the tables below binds one). */
static struct {
	const char *conflict, *min, *retries, *trust, *since, *base, *as;
	int dry_run, promote, cluster, prune;
} opt;

static const struct cmd_opt opts_none[] = {
	CMD_OPT_END,
};

static const struct cmd_opt opts_fetch[] = {
	CMD_FLAG("dry-run", 'n', "show what would be fetched; download and change nothing", &opt.dry_run),
	CMD_VALUE("conflict", 0, "POLICY", "accepted for symmetry with pull and push (a fetch has no conflicts)", &opt.conflict),
	CMD_OPT_END,
};

static const struct cmd_opt opts_push[] = {
	CMD_FLAG("dry-run", 'n', "show the plan; change nothing", &opt.dry_run),
	CMD_VALUE("conflict", 0, "POLICY", "when both sides changed: replay (default), keep-remote, fail, exec:PROG", &opt.conflict),
	CMD_VALUE("min", 0, "N", "cluster: fail (exit 5) only when a collection reached fewer than N peers (default R)", &opt.min),
	CMD_VALUE("retries", 0, "N", "cluster: attempts more per unreachable peer, with backoff (default 3)", &opt.retries),
	CMD_FLAG("promote", 0, "cluster: when a collection's home is unreachable, its next peer acts as home", &opt.promote),
	CMD_FLAG("cluster", 0, "over the cluster, operands are collections (the default with peers and no REMOTE)", &opt.cluster),
	CMD_OPT_END,
};

static const struct cmd_opt opts_pull[] = {
	CMD_FLAG("dry-run", 'n', "show the plan; change nothing", &opt.dry_run),
	CMD_VALUE("conflict", 0, "POLICY", "when both sides changed: replay (default), keep-remote, fail, exec:PROG", &opt.conflict),
	CMD_VALUE("retries", 0, "N", "cluster: attempts more per unreachable peer, with backoff (default 3)", &opt.retries),
	CMD_FLAG("cluster", 0, "over the cluster, operands are collections (the default with peers and no REMOTE)", &opt.cluster),
	CMD_OPT_END,
};

static const struct cmd_opt opts_rebalance[] = {
	CMD_FLAG("dry-run", 'n', "print the plan (what would move where); change nothing", &opt.dry_run),
	CMD_VALUE("retries", 0, "N", "attempts more per unreachable peer, with backoff (default 3)", &opt.retries),
	CMD_FLAG("prune", 0, "remove copies outside their placement once the placement holds all of them", &opt.prune),
	CMD_OPT_END,
};

static const struct cmd_opt opts_clone[] = {
	CMD_VALUE("trust", 0, "[NAME=]KEY[,...]", "also trust log entries signed by these keys (the remote's writers), named NAME", &opt.trust),
	CMD_OPT_END,
};

static const struct cmd_opt opts_bundle[] = {
	CMD_VALUE("since", 0, "REMOTE", "create: leave out what REMOTE's tracking refs have (an incremental bundle)", &opt.since),
	CMD_VALUE("base", 0, "FILE", "create: leave out what the earlier bundle FILE carries", &opt.base),
	CMD_VALUE("as", 0, "NAME", "verify, apply: track the bundle's collections as remote NAME (default bundle)", &opt.as),
	CMD_FLAG("dry-run", 'n', "apply: verify and show the plan; change nothing", &opt.dry_run),
	CMD_VALUE("conflict", 0, "POLICY", "apply: when both sides changed: replay (default), keep-remote, fail, exec:PROG", &opt.conflict),
	CMD_OPT_END,
};

/* ---- output and progress ---- */

struct out {
	struct cmd *c;
	int64_t next_ms;
	int shown;
};

/* 1 for a record that says nothing changed (and nothing would): what
 * --quiet leaves out, so that a pull from cron prints only what changed
 * or failed. */
static int no_change(const json_t *rec)
{
	const char *s = json_string_value(json_object_get(rec, "status"));

	return s && (strcmp(s, "up-to-date") == 0 || strcmp(s, "unchanged") == 0);
}

static int emit_cb(const json_t *rec, void *arg)
{
	struct out *o = arg;

	if (o->c->quiet && no_change(rec))
		return 0;
	if (o->shown) {
		fprintf(stderr, "\r\033[K");
		o->shown = 0;
	}
	if (cmd_print(o->c, rec))
		return OPT_EIO;
	fflush(stdout);
	return 0;
}

static void progress_cb(const char *what, size_t done, size_t total, void *arg)
{
	struct out *o = arg;
	int64_t now = opt_now_ms();

	if (now < o->next_ms && done < total)
		return;
	o->next_ms = now + 100;
	if (total)
		fprintf(stderr, "\r\033[K%s: %s: %zu/%zu", o->c->prog->name, what, done, total);
	else
		fprintf(stderr, "\r\033[K%s: %s", o->c->prog->name, what);
	o->shown = 1;
}

static void progress_end(struct out *o)
{
	if (o->shown)
		fprintf(stderr, "\r\033[K");
	o->shown = 0;
}

/* The options of a sync verb; 0 or the exit status of a usage error. */
static int sync_opts(struct cmd *c, struct opt_sync_opts *so, struct out *o)
{
	const char *p = opt.conflict;

	memset(so, 0, sizeof(*so));
	memset(o, 0, sizeof(*o));
	o->c = c;
	o->next_ms = opt_now_ms() + 300;
	if (p && strcmp(p, "replay") && strcmp(p, "keep-remote") && strcmp(p, "fail") &&
	    !(strncmp(p, "exec:", 5) == 0 && p[5]))
		return cmd_usage(c, "unknown conflict policy '%s' (replay, keep-remote, fail, exec:PROG)", opt_esc(p));
	so->conflict = p;
	so->dry_run = opt.dry_run;
	so->emit = emit_cb;
	so->progress = cmd_progress_ok(c) ? progress_cb : NULL;
	so->arg = o;
	return 0;
}

/* Open the store and its sync state. */
static int open_sync(struct cmd *c, struct opt_sync **y, int lock)
{
	int rc, st;

	*y = NULL;
	if ((st = cmd_store(c, 0)))
		return st;
	/* TLS certificates are loaded only if an https peer asks for them */
	cmd_tls_enable();
	if ((rc = opt_sync_open(y, c->store)) < 0)
		return cmd_lib_fail(c, rc);
	if (lock && (rc = opt_sync_lock(*y, 0)) < 0) {
		opt_sync_free(*y);
		*y = NULL;
		return cmd_lib_fail(c, rc);
	}
	return 0;
}

static int check_colls(struct cmd *c, int from)
{
	int i;

	for (i = from; i < c->npos; i++)
		if (opt_store_name_check(c->pos[i]) < 0)
			return cmd_usage(c, "%s", opt_error_last());
	return 0;
}

/* ---- remote ---- */

/* The end of a remote or peer sub-verb: the library's result rc. */
static int sub_end(struct cmd *c, struct opt_sync *y, struct opt_cluster *cl, int rc)
{
	opt_cluster_free(cl);
	opt_sync_free(y);
	if (rc < 0)
		return cmd_lib_fail(c, rc);
	return 0;
}

/* Print the records of list (taken). */
static int print_list(struct cmd *c, json_t *list)
{
	size_t i;
	int st = 0;

	for (i = 0; i < json_array_size(list) && !st; i++)
		st = cmd_print(c, json_array_get(list, i));
	json_decref(list);
	return st;
}

static int remote_add(struct cmd *c)
{
	struct opt_sync *y = NULL;
	int rc, st;

	if (c->npos != 3)
		return cmd_usage(c, "remote add takes a name and a URL");
	if (!opt_sync_remote_name_valid(c->pos[1]))
		return cmd_usage(c, "invalid remote name '%s' (use letters, digits, '.', '_' and '-')", opt_esc(c->pos[1]));
	if (!*c->pos[2])
		return cmd_usage(c, "the URL is empty");
	if ((st = open_sync(c, &y, 0)))
		return st;
	rc = opt_sync_remote_add(y, c->pos[1], c->pos[2]);
	if (rc == OPT_ECONFLICT)
		rc = opt_error_set(OPT_EINVAL, "remote '%s' exists already", c->pos[1]);
	return sub_end(c, y, NULL, rc);
}

static int remote_rm(struct cmd *c)
{
	struct opt_sync *y = NULL;
	int st;

	if (c->npos != 2)
		return cmd_usage(c, "remote rm takes one name");
	if ((st = open_sync(c, &y, 0)))
		return st;
	return sub_end(c, y, NULL, opt_sync_remote_rm(y, c->pos[1]));
}

static int remote_ls(struct cmd *c)
{
	struct opt_sync *y = NULL;
	json_t *list = NULL;
	int rc, st = 0;

	if (c->npos != 1)
		return cmd_usage(c, "remote ls takes no operands");
	if ((st = open_sync(c, &y, 0)))
		return st;
	if ((rc = opt_sync_remote_list(y, &list)) == 0)
		st = print_list(c, list);
	rc = sub_end(c, y, NULL, rc);
	return rc ? rc : st;
}

static const struct cmd_sub remote_subs[] = {
	{ "add", remote_add },
	{ "rm", remote_rm },
	{ "ls", remote_ls },
	{ NULL, NULL },
};

static int do_remote(struct cmd *c)
{
	return cmd_sub_run(c, remote_subs);
}

/* ---- fetch, pull, push ---- */

typedef int (*sync_fn)(struct opt_sync *, const char *, const char *const *, size_t, const struct opt_sync_opts *);

/* The cluster's options; 0 or the exit status of a usage error. */
static int cluster_opts(struct cmd *c, const struct opt_sync_opts *so, struct opt_cluster_opts *co)
{
	long v;
	int st;

	memset(co, 0, sizeof(*co));
	co->sync = *so;
	if ((st = cmd_long(c, &opt.retries, -1, 0, &v)))
		return st;
	co->retries = v > 1000 ? 1000 : (int)v;
	if (opt.min) {
		if ((st = cmd_long(c, &opt.min, 0, 1, &v)))
			return st;
		co->min = v;
	}
	co->promote = opt.promote ? 1 : 0;
	co->prune = opt.prune ? 1 : 0;
	if (getenv("OPT_CLUSTER_BACKOFF_MS"))
		co->backoff_ms = (unsigned)strtoul(getenv("OPT_CLUSTER_BACKOFF_MS"), NULL, 10);
	return 0;
}

typedef int (*cluster_fn)(struct opt_cluster *, const char *const *, size_t, const struct opt_cluster_opts *);

/* push or pull with no remote named: over the cluster when the store has
 * peers (the exit status), else -1 (the default remote then). */
static int run_cluster(struct cmd *c, struct opt_sync *y, cluster_fn fn, const struct opt_sync_opts *so, struct out *o)
{
	struct opt_cluster *cl = NULL;
	struct opt_cluster_opts co;
	int rc, st;

	if ((rc = opt_cluster_open(&cl, c->store, y)) < 0)
		return cmd_lib_fail(c, rc);
	if (opt_cluster_npeers(cl) == 0) {
		opt_cluster_free(cl);
		if (opt.cluster)
			return cmd_fail(c, OPT_EXIT_NOTFOUND, "the store has no peers (opt-sync peer add NAME URL)");
		return -1;
	}
	if ((st = cluster_opts(c, so, &co))) {
		opt_cluster_free(cl);
		return st;
	}
	rc = fn(cl, (const char *const *)c->pos, (size_t)c->npos, &co);
	progress_end(o);
	opt_cluster_free(cl);
	if (rc < 0)
		return c->out_err ? OPT_EXIT_OTHER : cmd_lib_fail(c, rc);
	return c->out_err ? OPT_EXIT_OTHER : 0;
}

static int run_sync(struct cmd *c, sync_fn fn, cluster_fn cl)
{
	struct opt_sync *y = NULL;
	struct opt_sync_opts so;
	struct out o;
	char *remote = NULL;
	long v;
	int rc, st;

	/* option values are checked whether or not the run is over the cluster */
	if ((st = cmd_long(c, &opt.retries, -1, 0, &v)) || (opt.min && (st = cmd_long(c, &opt.min, 0, 1, &v))))
		return st;
	if (cl && opt.cluster) {
		if ((st = sync_opts(c, &so, &o)) || (st = check_colls(c, 0)) || (st = open_sync(c, &y, !so.dry_run)))
			return st;
		st = run_cluster(c, y, cl, &so, &o);
		opt_sync_free(y);
		return st;
	}
	if ((st = sync_opts(c, &so, &o)) || (st = check_colls(c, 1)))
		return st;
	if (c->npos && !opt_sync_remote_name_valid(c->pos[0]))
		return cmd_usage(c, "invalid remote name '%s'", opt_esc(c->pos[0]));
	if ((st = open_sync(c, &y, !so.dry_run)))
		return st;
	if (!c->npos && cl && (st = run_cluster(c, y, cl, &so, &o)) >= 0) {
		opt_sync_free(y);
		return st;
	}
	if (c->npos)
		remote = strdup(c->pos[0]);
	else if ((rc = opt_sync_remote_default(y, &remote)) < 0) {
		opt_sync_free(y);
		return cmd_lib_fail(c, rc == OPT_EINVAL ? OPT_EINVAL : rc);
	}
	rc = fn(y, remote, (const char *const *)(c->npos > 1 ? c->pos + 1 : NULL), c->npos > 1 ? (size_t)c->npos - 1 : 0,
		&so);
	progress_end(&o);
	free(remote);
	opt_sync_free(y);
	if (rc < 0)
		return c->out_err ? OPT_EXIT_OTHER : cmd_lib_fail(c, rc);
	return c->out_err ? OPT_EXIT_OTHER : 0;
}

static int do_fetch(struct cmd *c)
{
	return run_sync(c, opt_sync_fetch, NULL);
}

static int do_pull(struct cmd *c)
{
	return run_sync(c, opt_sync_pull, opt_cluster_pull);
}

static int do_push(struct cmd *c)
{
	return run_sync(c, opt_sync_push, opt_cluster_push);
}

/* ---- status ---- */

static int do_status(struct cmd *c)
{
	struct opt_sync *y = NULL;
	struct opt_sync_opts so;
	struct out o;
	int rc, st;

	if (c->npos > 1)
		return cmd_usage(c, "status takes at most one remote");
	if ((st = sync_opts(c, &so, &o)))
		return st;
	if ((st = open_sync(c, &y, 0)))
		return st;
	rc = opt_sync_status(y, c->npos ? c->pos[0] : NULL, &so);
	opt_sync_free(y);
	if (rc < 0)
		return c->out_err ? OPT_EXIT_OTHER : cmd_lib_fail(c, rc);
	return c->out_err ? OPT_EXIT_OTHER : 0;
}

/* ---- bundle ---- */

static int no_emit(const json_t *rec, void *arg)
{
	(void)rec;
	(void)arg;
	return 0;
}

enum bundle_sub { BUNDLE_CREATE, BUNDLE_VERIFY, BUNDLE_LS, BUNDLE_APPLY };

/* bundle create|verify|ls|apply: one run, the options each allows. */
static int bundle_run(struct cmd *c, enum bundle_sub what)
{
	struct opt_sync *y = NULL;
	struct opt_sync_opts so;
	struct out o;
	const char *sub = c->pos[0], *file = c->npos > 1 ? c->pos[1] : NULL;
	const char *since = opt.since, *base = opt.base, *as = opt.as;
	const char *const *colls = (const char *const *)(c->npos > 2 ? c->pos + 2 : NULL);
	size_t n = c->npos > 2 ? (size_t)c->npos - 2 : 0;
	int create = what == BUNDLE_CREATE, apply = what == BUNDLE_APPLY, rc, st;

	if (!file || !*file)
		return cmd_usage(c, "bundle %s needs a FILE ('-': %s)", sub, create ? "stdout" : "stdin");
	if (what == BUNDLE_LS && c->npos > 2)
		return cmd_usage(c, "bundle ls takes one FILE");
	if (since && base)
		return cmd_usage(c, "--since and --base exclude each other");
	if ((since || base) && !create)
		return cmd_usage(c, "--%s is for bundle create", since ? "since" : "base");
	if (since && !opt_sync_remote_name_valid(since))
		return cmd_usage(c, "invalid remote name '%s'", opt_esc(since));
	if (as && (create || what == BUNDLE_LS))
		return cmd_usage(c, "--as is for bundle verify and apply");
	if (as && !opt_sync_remote_name_valid(as))
		return cmd_usage(c, "invalid remote name '%s'", opt_esc(as));
	if ((opt.dry_run || opt.conflict) && !apply)
		return cmd_usage(c, "--%s is for bundle apply", opt.dry_run ? "dry-run" : "conflict");
	if ((st = sync_opts(c, &so, &o)) || (st = check_colls(c, 2)))
		return st;
	if (create && strcmp(file, "-") == 0) {
		/* stdout carries the bundle */
		if (isatty(STDOUT_FILENO))
			return cmd_usage(c, "not writing a bundle to a terminal");
		so.emit = no_emit;
	}
	if (what == BUNDLE_LS) {
		rc = opt_bundle_ls(file, &so);
	} else {
		if ((st = open_sync(c, &y, apply && !so.dry_run)))
			return st;
		if (create)
			rc = opt_bundle_create(y, c->store, file, colls, n, since, base, &so);
		else if (apply)
			rc = opt_bundle_apply(y, c->store, file, as, colls, n, &so);
		else
			rc = opt_bundle_verify(y, c->store, file, as, colls, n, &so);
	}
	progress_end(&o);
	opt_sync_free(y);
	if (rc < 0)
		return c->out_err ? OPT_EXIT_OTHER : cmd_lib_fail(c, rc);
	return c->out_err ? OPT_EXIT_OTHER : 0;
}

static int bundle_create(struct cmd *c)
{
	return bundle_run(c, BUNDLE_CREATE);
}

static int bundle_verify(struct cmd *c)
{
	return bundle_run(c, BUNDLE_VERIFY);
}

static int bundle_ls(struct cmd *c)
{
	return bundle_run(c, BUNDLE_LS);
}

static int bundle_apply(struct cmd *c)
{
	return bundle_run(c, BUNDLE_APPLY);
}

static const struct cmd_sub bundle_subs[] = {
	{ "create", bundle_create },
	{ "verify", bundle_verify },
	{ "ls", bundle_ls },
	{ "apply", bundle_apply },
	{ NULL, NULL },
};

static int do_bundle(struct cmd *c)
{
	return cmd_sub_run(c, bundle_subs);
}

/* ---- clone ---- */

static int do_clone(struct cmd *c)
{
	struct opt_sync_opts so;
	struct out o;
	const char *dir, *list = opt.trust;
	char keys[16][OPT_TRUST_NAME_MAX + 2 + OPT_KEY_HEX];
	const char *kp[16];
	size_t nkeys = 0;
	int rc, st;

	if (c->npos < 1)
		return cmd_usage(c, "clone needs the URL of the remote");
	if (c->npos > 2)
		return cmd_usage(c, "clone takes a URL and a directory");
	if (!*c->pos[0])
		return cmd_usage(c, "the URL is empty");
	/* like opt-block init: DIR, else --store, else ./.opt ($OPT_STORE is
	 * where stores are looked for, not where a new one goes) */
	dir = c->npos == 2 ? c->pos[1] : c->store_dir ? c->store_dir : OPT_STORE_DIRNAME;
	if (!*dir)
		return cmd_usage(c, "the store directory is empty");
	/* --trust [NAME=]KEY[,[NAME=]KEY...] */
	while (list) {
		const char *comma = strchr(list, ',');
		size_t len = comma ? (size_t)(comma - list) : strlen(list);
		const char *eq = memchr(list, '=', len);
		const char *k = eq ? eq + 1 : list;
		size_t klen = len - (size_t)(k - list);
		if (nkeys == 16)
			return cmd_usage(c, "at most 16 keys to trust");
		if (len > OPT_TRUST_NAME_MAX + 1 + OPT_KEY_HEX || klen != OPT_KEY_HEX || (eq && eq == list)) {
			char a[81];
			snprintf(a, sizeof(a), "%.*s", (int)(len > 80 ? 80 : len), list);
			return cmd_usage(c, "invalid key '%s' (NAME=KEY or KEY, KEY 64 lowercase hex characters)",
					 opt_esc(a));
		}
		memcpy(keys[nkeys], list, len);
		keys[nkeys][len] = '\0';
		if (!opt_key_hex_valid(keys[nkeys] + (k - list)))
			return cmd_usage(c, "invalid key '%s' (64 lowercase hex characters)", opt_esc(keys[nkeys] + (k - list)));
		kp[nkeys] = keys[nkeys];
		nkeys++;
		list = comma ? comma + 1 : NULL;
	}
	if ((st = sync_opts(c, &so, &o)))
		return st;
	cmd_tls_enable();
	rc = opt_sync_clone(NULL, c->pos[0], dir, nkeys ? kp : NULL, nkeys, &so);
	progress_end(&o);
	if (rc < 0)
		return c->out_err ? OPT_EXIT_OTHER : cmd_lib_fail(c, rc);
	return c->out_err ? OPT_EXIT_OTHER : 0;
}

/* ---- the cluster ---- */

/* Open the store, its sync state and its cluster. */
static int open_cluster(struct cmd *c, struct opt_sync **y, struct opt_cluster **cl, int lock)
{
	int rc, st;

	*cl = NULL;
	if ((st = open_sync(c, y, lock)))
		return st;
	if ((rc = opt_cluster_open(cl, c->store, *y)) < 0) {
		opt_sync_free(*y);
		*y = NULL;
		return cmd_lib_fail(c, rc);
	}
	return 0;
}

static int peer_add(struct cmd *c)
{
	struct opt_sync *y = NULL;
	struct opt_cluster *cl = NULL;
	int rc, st;

	if (c->npos != 2 && c->npos != 3)
		return cmd_usage(c, "peer add takes a name and a URL (none for an existing remote)");
	if (!opt_sync_remote_name_valid(c->pos[1]))
		return cmd_usage(c, "invalid remote name '%s' (use letters, digits, '.', '_' and '-')", opt_esc(c->pos[1]));
	if (c->npos == 3 && !*c->pos[2])
		return cmd_usage(c, "the URL is empty");
	if ((st = open_cluster(c, &y, &cl, 0)))
		return st;
	rc = opt_cluster_peer_add(cl, c->pos[1], c->npos == 3 ? c->pos[2] : NULL);
	if (rc == OPT_ECONFLICT)
		rc = opt_error_set(OPT_EINVAL, "remote '%s' exists already (opt-sync peer add %s, without a URL)",
				   c->pos[1], c->pos[1]);
	return sub_end(c, y, cl, rc);
}

static int peer_rm(struct cmd *c)
{
	struct opt_sync *y = NULL;
	struct opt_cluster *cl = NULL;
	int st;

	if (c->npos != 2)
		return cmd_usage(c, "peer rm takes one name");
	if ((st = open_cluster(c, &y, &cl, 0)))
		return st;
	return sub_end(c, y, cl, opt_cluster_peer_rm(cl, c->pos[1]));
}

static int peer_ls(struct cmd *c)
{
	struct opt_sync *y = NULL;
	struct opt_cluster *cl = NULL;
	json_t *list = NULL;
	int rc, st;

	if (c->npos != 1)
		return cmd_usage(c, "peer ls takes no operands");
	if ((st = open_cluster(c, &y, &cl, 0)))
		return st;
	if ((rc = opt_cluster_peer_list(cl, &list)) == 0)
		st = print_list(c, list);
	rc = sub_end(c, y, cl, rc);
	return rc ? rc : st;
}

static const struct cmd_sub peer_subs[] = {
	{ "add", peer_add },
	{ "rm", peer_rm },
	{ "ls", peer_ls },
	{ NULL, NULL },
};

static int do_peer(struct cmd *c)
{
	return cmd_sub_run(c, peer_subs);
}

static int do_replicas(struct cmd *c)
{
	struct opt_sync *y = NULL;
	struct opt_cluster *cl = NULL;
	json_t *v = NULL;
	long r = 0;
	char *end = NULL;
	int rc, st;

	if (c->npos > 1)
		return cmd_usage(c, "replicas takes at most one number");
	if (c->npos) {
		errno = 0;
		r = strtol(c->pos[0], &end, 10);
		if (errno || end == c->pos[0] || *end || r < 0 || r > OPT_CLUSTER_PEERS_MAX)
			return cmd_usage(c, "replicas needs a whole number 1..%d (0 unsets it), not '%s'",
					 OPT_CLUSTER_PEERS_MAX, opt_esc(c->pos[0]));
	}
	if ((st = open_cluster(c, &y, &cl, 0)))
		return st;
	rc = c->npos ? opt_cluster_replicas_set(cl, r) : 0;
	if (rc == 0 && c->npos) {
		opt_cluster_free(cl);
		rc = opt_cluster_open(&cl, c->store, y);
	}
	if (rc == 0 && (rc = opt_cluster_replicas_get(cl, &v)) == 0) {
		st = cmd_print(c, v);
		json_decref(v);
	}
	opt_cluster_free(cl);
	opt_sync_free(y);
	return rc < 0 ? cmd_lib_fail(c, rc) : st;
}

static int do_ordering(struct cmd *c)
{
	struct opt_sync *y = NULL;
	struct opt_cluster *cl = NULL;
	json_t *v;
	int rc = 0, st;

	if (c->npos > 1)
		return cmd_usage(c, "ordering takes at most one word");
	if (c->npos && strcmp(c->pos[0], "home") != 0 && strcmp(c->pos[0], "quorum") != 0)
		return cmd_usage(c, "ordering is home or quorum, not '%s'", opt_esc(c->pos[0]));
	if ((st = open_cluster(c, &y, &cl, 0)))
		return st;
	if (c->npos)
		rc = opt_cluster_ordering_set(cl, c->pos[0]);
	if (rc == 0) {
		v = json_pack("{s:s}", "ordering", opt_cluster_ordering(cl));
		st = cmd_print(c, v);
		json_decref(v);
	}
	opt_cluster_free(cl);
	opt_sync_free(y);
	return rc < 0 ? cmd_lib_fail(c, rc) : st;
}

static int do_where(struct cmd *c)
{
	struct opt_sync *y = NULL;
	struct opt_cluster *cl = NULL;
	json_t *names = NULL, *v;
	size_t i;
	int rc = 0, st, named = c->npos > 0;

	if ((st = cmd_args_expand(c, 0)) || (st = check_colls(c, 0)) || (st = open_cluster(c, &y, &cl, 0)))
		return st;
	if (named) {
		names = json_array();
		for (i = 0; i < (size_t)c->npos; i++)
			json_array_append_new(names, json_string(c->pos[i]));
	} else {
		rc = opt_store_list(c->store, &names);
	}
	for (i = 0; rc == 0 && !st && i < json_array_size(names); i++)
		if ((rc = opt_cluster_where(cl, json_string_value(json_array_get(names, i)), &v)) == 0) {
			st = cmd_print(c, v);
			json_decref(v);
		}
	if (rc == 0 && json_array_size(names) == 0 && opt_cluster_npeers(cl) == 0)
		rc = opt_cluster_where(cl, "x", &v);
	json_decref(names);
	opt_cluster_free(cl);
	opt_sync_free(y);
	return rc < 0 ? cmd_lib_fail(c, rc) : st;
}

static int do_rebalance(struct cmd *c)
{
	struct opt_sync *y = NULL;
	struct opt_cluster *cl = NULL;
	struct opt_sync_opts so;
	struct opt_cluster_opts co;
	struct out o;
	int rc, st;

	if (c->npos)
		return cmd_usage(c, "rebalance takes no operands");
	if ((st = sync_opts(c, &so, &o)) || (st = cluster_opts(c, &so, &co)))
		return st;
	if ((st = open_cluster(c, &y, &cl, !so.dry_run)))
		return st;
	rc = opt_cluster_rebalance(cl, &co);
	opt_cluster_free(cl);
	opt_sync_free(y);
	if (rc < 0)
		return c->out_err ? OPT_EXIT_OTHER : cmd_lib_fail(c, rc);
	return c->out_err ? OPT_EXIT_OTHER : 0;
}

static const struct cmd_verb verbs[] = {
	{ "remote", do_remote, "add NAME URL | rm NAME | ls",
	  "add, remove or list the store's peers: {name, url} lines", opts_none, 0 },
	{ "clone", do_clone, "URL [DIR] [--trust [NAME=]KEY[,...]]",
	  "make a store at DIR (default .opt) holding the collections of URL", opts_clone, 1 },
	{ "fetch", do_fetch, "[REMOTE] [COLL...] [--dry-run]",
	  "fetch and verify the remote's collections into its tracking refs", opts_fetch, 0 },
	{ "pull", do_pull, "[REMOTE] [COLL...] [--dry-run] [--conflict POLICY] [--cluster] [--retries N]",
	  "fetch, then fast-forward or replay the local collections", opts_pull, 0 },
	{ "push", do_push,
	  "[REMOTE] [COLL...] [--dry-run] [--conflict POLICY] [--cluster] [--min N] [--retries N] [--promote]",
	  "update the remote's collections by compare-and-swap, replaying when it moved", opts_push, 0 },
	{ "bundle", do_bundle,
	  "create FILE [COLL...] [--since REMOTE | --base FILE] | verify FILE [COLL...] [--as NAME] | ls FILE | "
	  "apply FILE [COLL...] [--as NAME] [--dry-run] [--conflict POLICY]",
	  "write collections to one file for offline transfer; list, verify or apply (pull from) one", opts_bundle, 0 },
	{ "status", do_status, "[REMOTE]",
	  "revisions on each side since the common base: {collection, remote, ahead, behind}", opts_none, 0 },
	{ "peer", do_peer, "add NAME [URL] | rm NAME | ls",
	  "the cluster's peers: remotes that hold the collections placed on them", opts_none, 0 },
	{ "replicas", do_replicas, "[R]", "show or set R, the peers each collection is placed on: {replicas, configured, peers}",
	  opts_none, 0 },
	{ "ordering", do_ordering, "[home | quorum]",
	  "show or set how writes are ordered in the cluster: by each collection's home, or chosen by a majority of "
	  "its peers: {ordering}",
	  opts_none, 0 },
	{ "where", do_where, "[COLL... | -]", "where collections live: {collection, peers, home} (placement order)", opts_none,
	  0 },
	{ "rebalance", do_rebalance, "[--dry-run] [--retries N] [--prune]",
	  "copy collections to the peers of their placement that lack them", opts_rebalance, 0 },
	{ NULL, NULL, NULL, NULL, NULL, 0 },
};

static const struct cmd_prog prog = {
	"opt-sync",
	"Peers of optimystic: remotes, clone, fetch, pull and push, clusters of peers\n"
	"and bundles.  Fetched data is verified before any ref moves; pushes are\n"
	"compare-and-swap at the remote.",
	verbs,
};

int main(int argc, char **argv)
{
	/* a peer that hangs up must not kill us (libgit2 writes to pipes) */
	signal(SIGPIPE, SIG_IGN);
	return cmd_main(&prog, argc, argv);
}
