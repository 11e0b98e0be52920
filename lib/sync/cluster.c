/* cluster.c - placement by rendezvous hashing and push, pull and
 * rebalance over each collection's cluster (see cluster.h). */
#include "internal.h"
#include "error.h"
#include "json.h"
#include "util.h"

#include <errno.h>
#include <git2.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PLACEMENT_KEY "optimystic placement"

/* ---- placement ---- */

uint64_t opt_cluster_weight(const char *peer, const char *coll)
{
	crypto_generichash_state st;
	unsigned char h[16];
	uint64_t w = 0;
	int i;

	crypto_generichash_init(&st, (const unsigned char *)PLACEMENT_KEY, sizeof(PLACEMENT_KEY) - 1, sizeof(h));
	crypto_generichash_update(&st, (const unsigned char *)peer, strlen(peer) + 1);
	crypto_generichash_update(&st, (const unsigned char *)coll, strlen(coll));
	crypto_generichash_final(&st, h, sizeof(h));
	for (i = 0; i < 8; i++)
		w = w << 8 | h[i];
	return w;
}

size_t opt_cluster_place(const char *const *peers, size_t n, const char *coll, size_t r, size_t *out)
{
	uint64_t wv[OPT_CLUSTER_PEERS_MAX];
	size_t i, j, k = 0;

	if (n > OPT_CLUSTER_PEERS_MAX)
		n = OPT_CLUSTER_PEERS_MAX;
	if (r > n)
		r = n;
	for (i = 0; i < n; i++)
		wv[i] = opt_cluster_weight(peers[i], coll);
	/* insertion into the top r: higher weight first, ties by name */
	for (i = 0; i < n; i++) {
		for (j = k; j > 0; j--) {
			size_t p = out[j - 1];
			if (wv[p] > wv[i] || (wv[p] == wv[i] && strcmp(peers[p], peers[i]) < 0))
				break;
			if (j < r)
				out[j] = p;
		}
		if (j < r)
			out[j] = i;
		if (k < r)
			k++;
	}
	return k;
}

/* ---- configuration ---- */

/* The store's config, fresh from disk (*repo and *cfg to free). */
static int config_open(struct opt_store *s, git_repository **repo, git_config **cfg)
{
	int rc;

	*repo = NULL;
	*cfg = NULL;
	if ((rc = opt_store__repo_open(s, repo)) < 0)
		return rc;
	if (git_repository_config(cfg, *repo) < 0) {
		git_repository_free(*repo);
		*repo = NULL;
		return opt_git_fail(OPT_EIO, "cannot read the store's configuration");
	}
	return 0;
}

static void config_close(git_repository *repo, git_config *cfg)
{
	git_config_free(cfg);
	git_repository_free(repo);
}

/* remote.NAME.optpeer = true entries: names into the object flags. */
static int peers_cb(const git_config_entry *e, void *arg)
{
	json_t *flags = arg;
	const char *k = e->name, *dot;
	char name[OPT_REMOTE_NAME_MAX + 1];
	size_t len;
	int b = 0;

	if (strncmp(k, "remote.", 7) != 0)
		return 0;
	k += 7;
	if (!(dot = strrchr(k, '.')) || strcasecmp(dot + 1, "optpeer") != 0)
		return 0;
	len = (size_t)(dot - k);
	if (len == 0 || len > OPT_REMOTE_NAME_MAX)
		return 0;
	memcpy(name, k, len);
	name[len] = '\0';
	if (git_config_parse_bool(&b, e->value) < 0) {
		git_error_clear();
		b = 0;
	}
	if (b)
		json_object_set_new(flags, name, json_true());
	else
		json_object_del(flags, name);
	return 0;
}

/* opt.ordering: "home" (the default) or "quorum". */
static int ordering_of(git_config *cfg, int *quorum)
{
	git_buf v = GIT_BUF_INIT;
	int rc = git_config_get_string_buf(&v, cfg, "opt.ordering");

	*quorum = 0;
	if (rc == GIT_ENOTFOUND) {
		git_error_clear();
		return 0;
	}
	if (rc < 0)
		return opt_git_fail(OPT_EIO, "cannot read opt.ordering");
	if (strcmp(v.ptr, "quorum") == 0)
		*quorum = 1;
	else if (strcmp(v.ptr, "home") != 0)
		rc = opt_error_set(OPT_EINVAL, "invalid opt.ordering '%s' (home or quorum)", opt_esc(v.ptr));
	git_buf_dispose(&v);
	return rc < 0 ? rc : 0;
}

int opt_cluster_open(struct opt_cluster **out, struct opt_store *s, struct opt_sync *y)
{
	struct opt_cluster *c;
	git_repository *repo = NULL;
	git_config *cfg = NULL;
	json_t *flags = json_object(), *remotes = NULL;
	int32_t r = 0;
	size_t i, n;
	int rc;

	*out = NULL;
	opt_util_init();
	if (!flags)
		return opt_error_set(OPT_EIO, "out of memory");
	c = calloc(1, sizeof(*c));
	if (!c) {
		json_decref(flags);
		return opt_error_set(OPT_EIO, "out of memory");
	}
	c->s = s;
	c->y = y;
	if ((rc = config_open(s, &repo, &cfg)) < 0)
		goto fail;
	if (git_config_foreach(cfg, peers_cb, flags) < 0) {
		rc = opt_git_fail(OPT_EIO, "cannot read the store's configuration");
		goto fail;
	}
	rc = git_config_get_int32(&r, cfg, "opt.replicas");
	if (rc == GIT_ENOTFOUND || (rc == 0 && r < 1)) {
		git_error_clear();
		r = 0;
	} else if (rc < 0) {
		rc = opt_git_fail(OPT_EINVAL, "invalid opt.replicas");
		goto fail;
	}
	c->configured = r;
	if ((rc = ordering_of(cfg, &c->quorum)) < 0)
		goto fail;
	if ((rc = opt_sync_remote_list(y, &remotes)) < 0)
		goto fail;
	n = json_array_size(remotes);
	c->peers = calloc(n + 1, sizeof(*c->peers));
	c->urls = calloc(n + 1, sizeof(*c->urls));
	if (!c->peers || !c->urls) {
		rc = opt_error_set(OPT_EIO, "out of memory");
		goto fail;
	}
	/* remotes come sorted by name */
	for (i = 0; i < n && c->n < OPT_CLUSTER_PEERS_MAX; i++) {
		json_t *e = json_array_get(remotes, i);
		const char *name = json_string_value(json_object_get(e, "name"));
		if (!json_object_get(flags, name))
			continue;
		c->peers[c->n] = strdup(name);
		c->urls[c->n] = strdup(json_string_value(json_object_get(e, "url")));
		if (!c->peers[c->n] || !c->urls[c->n]) {
			c->n++;
			rc = opt_error_set(OPT_EIO, "out of memory");
			goto fail;
		}
		c->n++;
	}
	rc = 0;
	*out = c;
	c = NULL;
fail:
	json_decref(flags);
	json_decref(remotes);
	config_close(repo, cfg);
	opt_cluster_free(c);
	return rc;
}

void opt_cluster_free(struct opt_cluster *c)
{
	size_t i;

	if (!c)
		return;
	for (i = 0; i < c->n; i++) {
		free(c->peers[i]);
		free(c->urls[i]);
	}
	free(c->peers);
	free(c->urls);
	free(c);
}

size_t opt_cluster_npeers(const struct opt_cluster *c)
{
	return c->n;
}

const char *opt_cluster_peer(const struct opt_cluster *c, size_t i)
{
	return i < c->n ? c->peers[i] : NULL;
}

size_t opt_cluster_replicas(const struct opt_cluster *c)
{
	size_t r = c->configured > 0 ? (size_t)c->configured : OPT_CLUSTER_REPLICAS_DEFAULT;

	return r < c->n ? r : c->n;
}

/* Set (value non-NULL) or unset remote.NAME.optPeer / opt.replicas. */
static int config_set(struct opt_store *s, const char *key, const char *value)
{
	git_repository *repo = NULL;
	git_config *cfg = NULL;
	int rc;

	if ((rc = config_open(s, &repo, &cfg)) < 0)
		return rc;
	if (value)
		rc = git_config_set_string(cfg, key, value) < 0 ? opt_git_fail(OPT_EIO, "cannot write the configuration") : 0;
	else if ((rc = git_config_delete_entry(cfg, key)) == GIT_ENOTFOUND) {
		git_error_clear();
		rc = OPT_ENOTFOUND;
	} else if (rc < 0) {
		rc = opt_git_fail(OPT_EIO, "cannot write the configuration");
	}
	config_close(repo, cfg);
	return rc;
}

/* 1 if remote name exists. */
static int remote_exists(struct opt_sync *y, const char *name)
{
	json_t *list = NULL;
	size_t i;
	int rc, found = 0;

	if ((rc = opt_sync_remote_list(y, &list)) < 0)
		return rc;
	for (i = 0; i < json_array_size(list); i++)
		if (strcmp(json_string_value(json_object_get(json_array_get(list, i), "name")), name) == 0)
			found = 1;
	json_decref(list);
	return found;
}

int opt_cluster_peer_add(struct opt_cluster *c, const char *name, const char *url)
{
	char key[OPT_REMOTE_NAME_MAX + 32];
	int rc;

	if (!opt_sync_remote_name_valid(name))
		return opt_error_set(OPT_EINVAL, "invalid remote name '%s' (use letters, digits, '.', '_' and '-')", opt_esc(name));
	if (url) {
		if ((rc = opt_sync_remote_add(c->y, name, url)) < 0)
			return rc;
	} else if ((rc = remote_exists(c->y, name)) <= 0) {
		return rc < 0 ? rc : opt_error_set(OPT_ENOTFOUND, "no remote '%s' (opt-sync peer add %s URL)", name, name);
	}
	snprintf(key, sizeof(key), "remote.%s.optPeer", name);
	return config_set(c->s, key, "true");
}

int opt_cluster_peer_rm(struct opt_cluster *c, const char *name)
{
	char key[OPT_REMOTE_NAME_MAX + 32];
	int rc;

	if (!opt_sync_remote_name_valid(name))
		return opt_error_set(OPT_ENOTFOUND, "no peer '%.100s'", name);
	snprintf(key, sizeof(key), "remote.%s.optPeer", name);
	rc = config_set(c->s, key, NULL);
	if (rc == OPT_ENOTFOUND)
		rc = opt_error_set(OPT_ENOTFOUND, "'%s' is not a peer of the cluster", name);
	return rc;
}

int opt_cluster_peer_list(struct opt_cluster *c, json_t **out)
{
	json_t *arr = json_array();
	size_t i;

	*out = NULL;
	for (i = 0; arr && i < c->n; i++)
		json_array_append_new(arr, json_pack("{s:s,s:s}", "name", c->peers[i], "url", c->urls[i]));
	if (!arr)
		return opt_error_set(OPT_EIO, "out of memory");
	*out = arr;
	return 0;
}

int opt_cluster_ordering_set(struct opt_cluster *c, const char *ordering)
{
	int rc;

	if (strcmp(ordering, "home") != 0 && strcmp(ordering, "quorum") != 0)
		return opt_error_set(OPT_EINVAL, "ordering is home or quorum, not '%s'", opt_esc(ordering));
	if ((rc = config_set(c->s, "opt.ordering", ordering)) < 0)
		return rc;
	c->quorum = strcmp(ordering, "quorum") == 0;
	return 0;
}

const char *opt_cluster_ordering(const struct opt_cluster *c)
{
	return c->quorum ? "quorum" : "home";
}

int opt_cluster_replicas_set(struct opt_cluster *c, long r)
{
	char v[32];
	int rc;

	if (r < 0 || r > OPT_CLUSTER_PEERS_MAX)
		return opt_error_set(OPT_EINVAL, "replicas must be 1..%d (0 unsets it)", OPT_CLUSTER_PEERS_MAX);
	if (r == 0) {
		rc = config_set(c->s, "opt.replicas", NULL);
		if (rc == OPT_ENOTFOUND) {
			opt_error_clear();
			rc = 0;
		}
		return rc;
	}
	snprintf(v, sizeof(v), "%ld", r);
	return config_set(c->s, "opt.replicas", v);
}

int opt_cluster_replicas_get(struct opt_cluster *c, json_t **out)
{
	*out = json_pack("{s:I,s:o,s:I}", "replicas", (json_int_t)opt_cluster_replicas(c), "configured",
			 c->configured ? json_integer(c->configured) : json_null(), "peers", (json_int_t)c->n);
	return *out ? 0 : opt_error_set(OPT_EIO, "out of memory");
}

/* The placement of coll: indices into out (R of them), their count. */
static size_t place(const struct opt_cluster *c, const char *coll, size_t *out)
{
	return opt_cluster_place((const char *const *)c->peers, c->n, coll, opt_cluster_replicas(c), out);
}

static int need_peers(const struct opt_cluster *c)
{
	if (c->n == 0)
		return opt_error_set(OPT_ENOTFOUND, "the store has no peers (opt-sync peer add NAME URL)");
	return 0;
}

int opt_cluster_where(struct opt_cluster *c, const char *coll, json_t **out)
{
	size_t idx[OPT_CLUSTER_PEERS_MAX], k, i;
	json_t *peers;
	int rc;

	*out = NULL;
	if ((rc = need_peers(c)) < 0)
		return rc;
	if ((rc = opt_store_name_check(coll)) < 0)
		return rc;
	k = place(c, coll, idx);
	peers = json_array();
	for (i = 0; peers && i < k; i++)
		json_array_append_new(peers, json_string(c->peers[idx[i]]));
	*out = json_pack("{s:s,s:o,s:s}", "collection", coll, "peers", peers, "home", c->peers[idx[0]]);
	return *out ? 0 : opt_error_set(OPT_EIO, "out of memory");
}

/* ---- bookkeeping per collection ---- */

struct cstate {
	const char *name;
	size_t *place;       /* the placement: peer indices, home first */
	size_t np;
	int acting;          /* index into place of the peer acting as home (-1: none yet) */
	int home_ok;
	json_t *reached;     /* peer names that took it */
	int failed;          /* a non-network failure */
	int changed;         /* a replica's repair moved our head: push it again */
	/* push */
	int planned;         /* settled and local are current for acting */
	int settled;         /* the acting home held our head when planned */
	git_oid local;       /* our head when planned */
	git_oid acked;       /* what the acting home acknowledged (home_ok) */
	git_oid *given;      /* per placement index: the state given to that replica */
	unsigned char *rst;  /* per placement index: RS_* */
};

enum { RS_NONE, RS_GIVEN, RS_DONE };

struct run {
	struct opt_cluster *c;
	const struct opt_cluster_opts *o;
	struct cstate *cs;
	size_t nc;
	int down[OPT_CLUSTER_PEERS_MAX];
	char *down_msg[OPT_CLUSTER_PEERS_MAX];
	int down_attempts[OPT_CLUSTER_PEERS_MAX];
	int worst;           /* the first failure other than the network's */
	char worst_msg[1024];
	long sessions;
};

static void run_free(struct run *r)
{
	size_t i;

	for (i = 0; r->cs && i < r->nc; i++) {
		json_decref(r->cs[i].reached);
		free(r->cs[i].place);
		free(r->cs[i].given);
		free(r->cs[i].rst);
	}
	free(r->cs);
	for (i = 0; i < OPT_CLUSTER_PEERS_MAX; i++)
		free(r->down_msg[i]);
}

static int emit(const struct opt_cluster_opts *o, json_t *rec)
{
	int rc;

	if (!rec)
		return opt_error_set(OPT_EIO, "out of memory");
	rc = o->sync.emit ? o->sync.emit(rec, o->sync.arg) : 0;
	json_decref(rec);
	return rc;
}

static struct cstate *find_c(struct run *r, const char *name)
{
	size_t lo = 0, hi = r->nc;

	/* r->cs is in name order */
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int d = strcmp(r->cs[mid].name, name);
		if (d == 0)
			return &r->cs[mid];
		if (d < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static int reached_status(const char *st)
{
	static const char *const ok[] = { "pushed", "up-to-date", "replayed", "kept-remote", "new", "fast-forward",
					  "ahead", "repaired", NULL };
	size_t i;

	for (i = 0; st && ok[i]; i++)
		if (strcmp(st, ok[i]) == 0)
			return 1;
	return 0;
}

static void add_name(json_t *names, const char *name);

/* Take the results of the jobs: records out, peers down, collections
 * reached.  home: the jobs were homes (phase 1). */
static int settle(struct run *r, struct job *jobs, size_t nj, int home)
{
	size_t i, k;
	int rc;

	for (i = 0; i < nj; i++) {
		struct job *j = &jobs[i];
		const char *peer = r->c->peers[j->peer];
		json_t *seen = json_object();
		r->sessions += j->attempts > 0 ? j->attempts : 1;
		for (k = 0; k < json_array_size(j->recs); k++) {
			json_t *rec = json_array_get(j->recs, k);
			const char *name = json_string_value(json_object_get(rec, "collection"));
			struct cstate *cs = name ? find_c(r, name) : NULL;
			if (name)
				json_object_set_new(seen, name, json_true());
			if (cs && reached_status(json_string_value(json_object_get(rec, "status")))) {
				const char *st = json_string_value(json_object_get(rec, "status"));
				size_t q;
				/* a copy outside the placement (a multi-collection
				 * transaction carried it there) is no replica */
				for (q = 0; q < cs->np && cs->place[q] != j->peer; q++)
					;
				if (q < cs->np)
					add_name(cs->reached, peer);
				if (home)
					cs->home_ok = 1;
				else if (!json_is_true(json_object_get(rec, "dry_run")) &&
					 (strcmp(st, "repaired") == 0 || strcmp(st, "fast-forward") == 0))
					cs->changed = 1;
			}
			if ((rc = emit(r->o, json_incref(rec))) != 0) {
				json_decref(seen);
				return rc;
			}
		}
		if (j->rc < 0) {
			const char *msg = j->error ? j->error : "failed";
			if (j->rc == OPT_ENET) {
				r->down[j->peer] = 1;
				free(r->down_msg[j->peer]);
				r->down_msg[j->peer] = strdup(msg);
				r->down_attempts[j->peer] = j->attempts;
			} else if (!r->worst) {
				r->worst = j->rc;
				snprintf(r->worst_msg, sizeof(r->worst_msg), "%s", msg);
			}
			for (k = 0; k < json_array_size(j->names); k++) {
				const char *name = json_string_value(json_array_get(j->names, k));
				struct cstate *cs = find_c(r, name);
				if (json_object_get(seen, name))
					continue;
				if (cs && j->rc != OPT_ENET)
					cs->failed = 1;
				if ((rc = emit(r->o, json_pack("{s:s,s:s,s:s,s:s}", "remote", peer, "collection", name, "status",
							       "failed", "error", msg))) != 0) {
					json_decref(seen);
					return rc;
				}
			}
		}
		json_decref(seen);
	}
	return 0;
}

static void run_begin(struct run *r, struct opt_cluster *c, const struct opt_cluster_opts *o)
{
	memset(r, 0, sizeof(*r));
	r->c = c;
	r->o = o;
}

/* The collections of the run: names (sorted; borrowed, must outlive r). */
static int run_names(struct run *r, json_t *names)
{
	size_t i;

	r->nc = json_array_size(names);
	r->cs = calloc(r->nc + 1, sizeof(*r->cs));
	if (!r->cs)
		return opt_error_set(OPT_EIO, "out of memory");
	for (i = 0; i < r->nc; i++) {
		struct cstate *cs = &r->cs[i];
		cs->name = json_string_value(json_array_get(names, i));
		cs->place = calloc(opt_cluster_replicas(r->c) + 1, sizeof(*cs->place));
		cs->reached = json_array();
		cs->given = calloc(opt_cluster_replicas(r->c) + 1, sizeof(*cs->given));
		cs->rst = calloc(opt_cluster_replicas(r->c) + 1, sizeof(*cs->rst));
		if (!cs->place || !cs->reached || !cs->given || !cs->rst)
			return opt_error_set(OPT_EIO, "out of memory");
		cs->np = place(r->c, cs->name, cs->place);
		cs->acting = -1;
	}
	return 0;
}

/* Run one phase: the jobs of per (peer -> names) with op, then settle. */
static int phase(struct run *r, json_t *per, enum op op, int home)
{
	struct job *jobs;
	size_t nj;
	int rc;

	if (json_object_size(per) == 0)
		return 0;
	if (!(jobs = cluster_jobs_of(per, &nj)))
		return opt_error_set(OPT_EIO, "out of memory");
	rc = cluster_run_jobs(r->c, jobs, nj, op, r->o);
	if (rc == 0)
		rc = settle(r, jobs, nj, home);
	cluster_jobs_free(jobs, nj);
	return rc;
}

/* The unreachable peers, one record each, and the summary. */
static int report_end(struct run *r, const char *what, size_t short_n)
{
	json_t *down = json_array(), *sum;
	size_t i;
	int rc;

	for (i = 0; i < r->c->n; i++) {
		if (!r->down[i])
			continue;
		json_array_append_new(down, json_string(r->c->peers[i]));
		if ((rc = emit(r->o, json_pack("{s:s,s:s,s:i,s:s}", "peer", r->c->peers[i], "status", "unreachable",
					       "attempts", r->down_attempts[i], "error",
					       r->down_msg[i] ? r->down_msg[i] : "unreachable"))) != 0) {
			json_decref(down);
			return rc;
		}
	}
	sum = json_pack("{s:{s:s,s:I,s:I,s:I,s:I,s:o,s:I}}", "cluster", "op", what, "collections", (json_int_t)r->nc,
			"peers", (json_int_t)r->c->n, "replicas", (json_int_t)opt_cluster_replicas(r->c), "sessions",
			(json_int_t)r->sessions, "down", down, "short", (json_int_t)short_n);
	if (sum && r->o->sync.dry_run)
		json_object_set_new(json_object_get(sum, "cluster"), "dry_run", json_true());
	return emit(r->o, sum);
}

/* The final status: the first failure other than the network's, else
 * OPT_ENET when collections fell short. */
static int outcome(struct run *r, size_t short_n, long min)
{
	size_t i, nd = 0;
	char downs[512] = "";

	if (r->worst)
		return opt_error_set(r->worst, "%s", r->worst_msg);
	if (!short_n)
		return 0;
	for (i = 0; i < r->c->n; i++)
		if (r->down[i]) {
			size_t l = strlen(downs);
			snprintf(downs + l, sizeof(downs) - l, "%s%s", nd++ ? ", " : "", r->c->peers[i]);
		}
	return opt_error_set(OPT_ENET, "%zu of %zu collection%s %s fewer than %ld peer%s%s%s%s", short_n, r->nc,
			     r->nc == 1 ? "" : "s", r->o->sync.dry_run ? "would reach" : "reached", min, min == 1 ? "" : "s", nd ? " (unreachable: " : "", downs,
			     nd ? ")" : "");
}

static int cmp_json_str(const void *a, const void *b)
{
	return strcmp(json_string_value(*(json_t *const *)a), json_string_value(*(json_t *const *)b));
}

/* Sort an array of strings in place (strcmp order). */
static void sort_names(json_t *names)
{
	size_t i, n = json_array_size(names);
	json_t **v;

	if (n < 2 || !(v = malloc(n * sizeof(*v))))
		return;
	for (i = 0; i < n; i++)
		v[i] = json_incref(json_array_get(names, i));
	qsort(v, n, sizeof(*v), cmp_json_str);
	for (i = 0; i < n; i++)
		json_array_set_new(names, i, v[i]);
	free(v);
}

/* Add name to names (an array) unless it is there. */
static void add_name(json_t *names, const char *name)
{
	size_t j;

	for (j = 0; j < json_array_size(names); j++)
		if (strcmp(json_string_value(json_array_get(names, j)), name) == 0)
			return;
	json_array_append_new(names, json_string(name));
}

/* names: colls (validated, unique) or every local collection, sorted. */
static int names_of(struct opt_cluster *c, const char *const *colls, size_t n, json_t **out)
{
	json_t *names;
	size_t i;
	int rc;

	*out = NULL;
	if (!n) {
		if ((rc = opt_store_list(c->s, out)) < 0)
			return rc;
		sort_names(*out);
		return 0;
	}
	names = json_array();
	for (i = 0; names && i < n; i++) {
		if (!opt_store_name_valid(colls[i])) {
			json_decref(names);
			return opt_error_set(OPT_EINVAL, "invalid collection name '%s'", opt_esc(colls[i]));
		}
		add_name(names, colls[i]);
	}
	if (!names)
		return opt_error_set(OPT_EIO, "out of memory");
	sort_names(names);
	*out = names;
	return 0;
}

int cluster_has_name(const json_t *names, const char *name)
{
	size_t lo = 0, hi = json_array_size(names);

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int d = strcmp(json_string_value(json_array_get(names, mid)), name);
		if (d == 0)
			return 1;
		if (d < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

/* Ask every peer what it holds (one listing session each, in parallel):
 * *held gets {peer: {collection: true}} for the peers that answered;
 * the others are marked down. */
static int list_peers(struct run *r, json_t **held)
{
	struct job *jobs = calloc(r->c->n + 1, sizeof(*jobs));
	size_t i, k, nj = r->c->n;
	int rc;

	*held = json_object();
	if (!jobs || !*held) {
		free(jobs);
		return opt_error_set(OPT_EIO, "out of memory");
	}
	for (i = 0; i < nj; i++) {
		jobs[i].peer = i;
		jobs[i].names = json_array();
	}
	rc = cluster_run_jobs(r->c, jobs, nj, OP_LIST, r->o);
	for (i = 0; rc == 0 && i < nj; i++) {
		struct job *j = &jobs[i];
		r->sessions += j->attempts > 0 ? j->attempts : 1;
		if (j->rc < 0) {
			if (j->rc != OPT_ENET && !r->worst) {
				r->worst = j->rc;
				snprintf(r->worst_msg, sizeof(r->worst_msg), "%s", j->error ? j->error : "failed");
			}
			r->down[i] = 1;
			free(r->down_msg[i]);
			r->down_msg[i] = j->error ? strdup(j->error) : NULL;
			r->down_attempts[i] = j->attempts;
			continue;
		}
		{
			json_t *set = json_object();
			for (k = 0; k < json_array_size(j->recs); k++) {
				json_t *rec = json_array_get(j->recs, k);
				const char *name = json_string_value(json_object_get(rec, "collection"));
				const char *st = json_string_value(json_object_get(rec, "status"));
				/* a name the listing skipped: the pull reports it, unless
				 * it is no collection name at all (nothing to ask for) */
				if (name && (!st || strcmp(st, "skipped") != 0 || opt_store_name_valid(name)))
					json_object_set_new(set, name, json_true());
			}
			json_object_set_new(*held, r->c->peers[i], set);
		}
	}
	cluster_jobs_free(jobs, nj);
	return rc;
}

static int holds(json_t *held, const char *peer, const char *name)
{
	return json_object_get(json_object_get(held, peer), name) != NULL;
}

/* Local collections and those the peers hold, sorted. */
static int all_names(struct opt_cluster *c, json_t *held, json_t **out)
{
	const char *peer, *name;
	json_t *set, *v;
	json_t *all = json_object(), *local = NULL;
	size_t i;
	int rc;

	*out = NULL;
	if (!all)
		return opt_error_set(OPT_EIO, "out of memory");
	if ((rc = opt_store_list(c->s, &local)) < 0) {
		json_decref(all);
		return rc;
	}
	for (i = 0; i < json_array_size(local); i++)
		json_object_set_new(all, json_string_value(json_array_get(local, i)), json_true());
	json_object_foreach(held, peer, set)
		json_object_foreach(set, name, v)
			json_object_set_new(all, name, json_true());
	*out = json_array();
	json_object_foreach(all, name, v)
		json_array_append_new(*out, json_string(name));
	json_decref(all);
	json_decref(local);
	if (!*out)
		return opt_error_set(OPT_EIO, "out of memory");
	sort_names(*out);
	return 0;
}

/* Collections short of their peers, one record each: how many. */
static int report_short(struct run *r, long min, size_t *short_n)
{
	size_t i;
	int rc;

	*short_n = 0;
	for (i = 0; i < r->nc; i++) {
		struct cstate *cs = &r->cs[i];
		size_t want = (size_t)min < cs->np ? (size_t)min : cs->np;
		size_t got = json_array_size(cs->reached);
		json_t *rec;
		if (cs->failed || got >= want)
			continue;
		(*short_n)++;
		rec = json_pack("{s:s,s:s,s:I,s:I,s:O}", "collection", cs->name, "status",
				cs->home_ok ? "under-replicated" : "home-unreachable", "reached", (json_int_t)got, "required",
				(json_int_t)want, "peers", cs->reached);
		if (rec && !cs->home_ok && cs->np)
			json_object_set_new(rec, "home", json_string(r->c->peers[cs->place[0]]));
		if (rec && r->o->sync.dry_run)
			json_object_set_new(rec, "dry_run", json_true());
		if ((rc = emit(r->o, rec)) != 0)
			return rc;
	}
	return 0;
}

/* The collections of names that do not exist here: OPT_ENOTFOUND. */
static int check_local(struct opt_cluster *c, json_t *names)
{
	json_t *local = NULL;
	size_t i;
	int rc;

	if ((rc = opt_store_list(c->s, &local)) < 0)
		return rc;
	sort_names(local);
	for (i = 0; i < json_array_size(names); i++)
		if (!cluster_has_name(local, json_string_value(json_array_get(names, i)))) {
			rc = opt_error_set(OPT_ENOTFOUND, "no collection '%s'", json_string_value(json_array_get(names, i)));
			break;
		}
	json_decref(local);
	return rc;
}

/* ---- push: each home orders, each replica takes what its home took ---- */

/* Our head of name (peer NULL) or our tracking ref of it for peer: 1 and
 * *out, 0 when absent. */
static int ref_of(git_repository *repo, const char *peer, const char *name, git_oid *out)
{
	char ref[REFLEN];
	int rc = peer ? opt_ref_tracking(ref, sizeof(ref), peer, name) : opt_ref_collection(ref, sizeof(ref), name);

	return rc < 0 ? rc : opt_ref_read(repo, ref, out);
}

/* 1 if two sessions may both replay a collection here: one carries, for
 * a multi-collection transaction, a collection beyond its names (na, nb;
 * xa, xb: those extras) that the other takes or carries too. */
static int names_clash(const json_t *na, const json_t *xa, const json_t *nb, const json_t *xb)
{
	size_t i, k;

	for (i = 0; i < json_array_size(xa); i++) {
		const char *n = json_string_value(json_array_get(xa, i));
		for (k = 0; k < json_array_size(nb); k++)
			if (strcmp(n, json_string_value(json_array_get(nb, k))) == 0)
				return 1;
		for (k = 0; k < json_array_size(xb); k++)
			if (strcmp(n, json_string_value(json_array_get(xb, k))) == 0)
				return 1;
	}
	for (i = 0; i < json_array_size(xb); i++)
		for (k = 0; k < json_array_size(na); k++)
			if (strcmp(json_string_value(json_array_get(xb, i)), json_string_value(json_array_get(na, k))) == 0)
				return 1;
	return 0;
}

/* Put the jobs in waves, in place (stable; peer order within a wave):
 * sessions that could replay the same collection here (a
 * multi-collection transaction of ours carries its other collections
 * along) go in different waves; names[i] are the collections job i takes
 * (sorted; NULL: its names).  *nw gets the number of waves, ends[w] the
 * index past wave w's last job (ends: nj entries). */
static int clash_waves(struct run *r, struct job *jobs, json_t **names, size_t nj, size_t *ends, size_t *nw)
{
	json_t **extra = calloc(nj + 1, sizeof(*extra));
	int *wave = calloc(nj + 1, sizeof(*wave)), w, top = 0;
	struct job *sorted = calloc(nj + 1, sizeof(*sorted));
	size_t i, k, n = 0;
	int rc = 0;

	*nw = 0;
	if (!extra || !wave || !sorted) {
		rc = opt_error_set(OPT_EIO, "out of memory");
		goto done;
	}
	for (i = 0; i < nj; i++) {
		const json_t *ni = names && names[i] ? names[i] : jobs[i].names;
		json_t *all = json_copy((json_t *)ni);
		int grew = 0;
		extra[i] = json_array();
		if (!all || !extra[i]) {
			json_decref(all);
			rc = opt_error_set(OPT_EIO, "out of memory");
			goto done;
		}
		if (nj > 1 && !r->o->sync.dry_run &&
		    (rc = opt_sync_close_over(r->c->y, r->c->peers[jobs[i].peer], all, &grew)) < 0) {
			json_decref(all);
			goto done;
		}
		for (k = 0; grew && k < json_array_size(all); k++)
			if (!cluster_has_name(ni, json_string_value(json_array_get(all, k))))
				json_array_append(extra[i], json_array_get(all, k));
		json_decref(all);
		/* the first wave where it clashes with nobody */
		for (w = 0;; w++) {
			for (k = 0; k < i; k++)
				if (wave[k] == w &&
				    names_clash(ni, extra[i], names && names[k] ? names[k] : jobs[k].names, extra[k]))
					break;
			if (k == i)
				break;
		}
		wave[i] = w;
		if (w > top)
			top = w;
	}
	for (w = 0; w <= top; w++) {
		for (i = 0; i < nj; i++)
			if (wave[i] == w)
				sorted[n++] = jobs[i];
		ends[(*nw)++] = n;
	}
	memcpy(jobs, sorted, nj * sizeof(*jobs));
done:
	for (i = 0; extra && i < nj; i++)
		json_decref(extra[i]);
	free(extra);
	free(wave);
	free(sorted);
	return rc;
}

/* What the jobs did for each collection's roles: a home's acknowledged
 * state, the state each replica took; a collection whose head a replica's
 * repair moved starts over. */
static int push_roles(struct run *r, git_repository *repo, struct job *jobs, size_t nj)
{
	size_t i, k, q;
	int rc;

	for (i = 0; i < nj; i++) {
		struct job *j = &jobs[i];
		const char *peer = r->c->peers[j->peer];
		for (k = 0; k < json_array_size(j->names); k++) {
			const char *name = json_string_value(json_array_get(j->names, k));
			struct cstate *cs = find_c(r, name);
			json_t *src = json_object_get(j->replicas, name);
			int took = 0;
			if (!cs)
				continue;
			for (q = 0; q < json_array_size(j->recs); q++) {
				json_t *rec = json_array_get(j->recs, q);
				const char *cn = json_string_value(json_object_get(rec, "collection"));
				if (cn && strcmp(cn, name) == 0 && reached_status(json_string_value(json_object_get(rec, "status"))))
					took = 1;
			}
			if (!src) {
				/* its home */
				if (!took) {
					if (!r->down[j->peer])
						cs->failed = 1;
					continue;
				}
				cs->home_ok = 1;
				cs->acked = cs->local;
				if (!r->o->sync.dry_run && (rc = ref_of(repo, peer, name, &cs->acked)) < 0)
					return rc;
				continue;
			}
			for (q = 0; q < cs->np && cs->place[q] != j->peer; q++)
				;
			if (q == cs->np)
				continue;
			if (!took) {
				cs->rst[q] = RS_DONE;
				continue;
			}
			cs->rst[q] = RS_GIVEN;
			git_oid_fromstr(&cs->given[q], json_string_value(src));
		}
	}
	for (i = 0; i < r->nc; i++) {
		struct cstate *cs = &r->cs[i];
		if (!cs->changed)
			continue;
		/* a replica's writes came here: to the home, then to the others */
		cs->changed = 0;
		cs->home_ok = 0;
		cs->planned = 0;
	}
	return 0;
}

/* Run the sessions of one round: per (peer -> names), reps (peer ->
 * {name: hex}, the replicas among them).  Sessions that could replay the
 * same collection here (a multi-collection transaction carries its other
 * collections along) do not run at the same time. */
static int push_round(struct run *r, git_repository *repo, json_t *per, json_t *reps)
{
	struct job *jobs;
	size_t *ends = NULL, nj, nw = 0, i, w, start = 0;
	int rc = 0;

	if (!(jobs = cluster_jobs_of(per, &nj)))
		return opt_error_set(OPT_EIO, "out of memory");
	if (!(ends = calloc(nj + 1, sizeof(*ends)))) {
		rc = opt_error_set(OPT_EIO, "out of memory");
		goto done;
	}
	for (i = 0; i < nj; i++) {
		char key[24];
		snprintf(key, sizeof(key), "%zu", jobs[i].peer);
		jobs[i].replicas = json_incref(json_object_get(reps, key));
	}
	if ((rc = clash_waves(r, jobs, NULL, nj, ends, &nw)) < 0)
		goto done;
	for (w = 0; rc == 0 && w < nw; start = ends[w++]) {
		rc = cluster_run_jobs(r->c, jobs + start, ends[w] - start, OP_PUSH, r->o);
		if (rc == 0)
			rc = settle(r, jobs + start, ends[w] - start, 0);
		if (rc == 0)
			rc = push_roles(r, repo, jobs + start, ends[w] - start);
	}
done:
	free(ends);
	cluster_jobs_free(jobs, nj);
	return rc;
}

static void reps_add(json_t *reps, size_t peer, const char *name, const git_oid *id)
{
	char key[24], hex[GIT_OID_HEXSZ + 1];
	json_t *o;

	snprintf(key, sizeof(key), "%zu", peer);
	if (!(o = json_object_get(reps, key))) {
		o = json_object();
		json_object_set_new(reps, key, o);
	}
	git_oid_tostr(hex, sizeof(hex), id);
	json_object_set_new(o, name, json_string(hex));
}

/* Push the collections of r to the peers of their placement, in rounds.
 * A collection goes to its home (with promote, the next reachable peer
 * when the home is down), which orders it; a replica takes only a state
 * its home acknowledged: what the home took in this push, or our head
 * when the home already held it (our tracking ref of the home said so
 * when planned), so that replica needs no wait.  A round visits the
 * homes that have something new to order (their replicas wait for
 * them) and carries every other ready task of those peers along; when
 * no home has anything new, it visits every peer with a task.  In the
 * common cases that is one session per peer (an incremental push, a
 * push where the homes already hold our heads), or two for a peer that
 * orders new writes and replicates another home's new writes (see
 * docs/clusters.md for why no single connection can do both). */
/* One collection's part of a round: its home (the acting one: the first
 * peer up, a later one only with --promote) when the home has not taken
 * it yet (blocking that peer when it has something new to order), and
 * its replicas that have a state to take. */
static int push_plan_one(struct run *r, git_repository *repo, struct cstate *cs, json_t *per, json_t *reps,
			 int *blocking, int *nb)
{
	const struct opt_cluster_opts *o = r->o;
	size_t k;
	int rc;

	if (!cs->home_ok) {
		k = cs->acting < 0 ? 0 : (size_t)cs->acting;
		while (k < cs->np && r->down[cs->place[k]])
			k++;
		if (k >= cs->np || (k > 0 && !o->promote))
			return 0;  /* no home to order it: nothing of it this round */
		if ((int)k != cs->acting || !cs->planned) {
			git_oid t;
			int hl, ht;
			cs->acting = (int)k;
			cs->planned = 1;
			if ((hl = ref_of(repo, NULL, cs->name, &cs->local)) < 0 ||
			    (ht = ref_of(repo, r->c->peers[cs->place[k]], cs->name, &t)) < 0)
				return hl < 0 ? hl : ht;
			cs->settled = hl && ht && git_oid_equal(&cs->local, &t);
		}
		cluster_per_add(per, cs->place[k], cs->name);
		if (!cs->settled && cs->np > 1 && !blocking[cs->place[k]]) {
			blocking[cs->place[k]] = 1;
			(*nb)++;
		}
	}
	for (k = 0; k < cs->np; k++) {
		size_t p = cs->place[k];
		const git_oid *src = cs->home_ok ? &cs->acked : cs->settled ? &cs->local : NULL;
		if ((int)k == cs->acting || cs->rst[k] == RS_DONE || !src ||
		    (cs->rst[k] == RS_GIVEN && git_oid_equal(&cs->given[k], src)))
			continue;
		if (r->down[p]) {
			/* a peer found down is not tried again */
			cs->rst[k] = RS_DONE;
			if ((rc = emit(o, json_pack("{s:s,s:s,s:s,s:s}", "remote", r->c->peers[p], "collection", cs->name,
						    "status", "failed", "error",
						    r->down_msg[p] ? r->down_msg[p] : "unreachable"))) != 0)
				return rc;
			continue;
		}
		cluster_per_add(per, p, cs->name);
		reps_add(reps, p, cs->name, src);
	}
	return 0;
}

/* When some homes have something new to order, the round visits only
 * them (with whatever else they have to do). */
static void push_homes_first(struct run *r, json_t *per, json_t *reps, const int *blocking)
{
	size_t k;

	for (k = 0; k < r->c->n; k++) {
		char key[24];
		if (blocking[k])
			continue;
		snprintf(key, sizeof(key), "%zu", k);
		json_object_del(per, key);
		json_object_del(reps, key);
	}
}

static int push_run(struct run *r)
{
	git_repository *repo = NULL;
	size_t i;
	int rc = 0, round, max = 4 + 2 * (int)r->c->n;

	if ((rc = opt_store__repo_open(r->c->s, &repo)) < 0)
		return rc;
	for (round = 0; rc == 0 && round < max; round++) {
		json_t *per = json_object(), *reps = json_object();
		int blocking[OPT_CLUSTER_PEERS_MAX] = { 0 }, nb = 0;

		if (!per || !reps)
			rc = opt_error_set(OPT_EIO, "out of memory");
		for (i = 0; rc == 0 && i < r->nc; i++)
			if (!r->cs[i].failed)
				rc = push_plan_one(r, repo, &r->cs[i], per, reps, blocking, &nb);
		if (rc == 0 && nb)
			push_homes_first(r, per, reps, blocking);
		if (rc == 0 && json_object_size(per) == 0) {
			json_decref(per);
			json_decref(reps);
			break;
		}
		if (rc == 0)
			rc = push_round(r, repo, per, reps);
		json_decref(per);
		json_decref(reps);
	}
	git_repository_free(repo);
	return rc;
}

int opt_cluster_push(struct opt_cluster *c, const char *const *colls, size_t n, const struct opt_cluster_opts *o)
{
	struct run r;
	json_t *names = NULL;
	size_t short_n = 0;
	long min = o->min > 0 ? o->min : (long)opt_cluster_replicas(c);
	int rc;

	run_begin(&r, c, o);
	if ((rc = need_peers(c)) < 0 || (rc = names_of(c, colls, n, &names)) < 0)
		return rc;
	if (c->quorum) {
		rc = n ? check_local(c, names) : 0;
		if (rc == 0)
			rc = cluster_quorum_push(c, names, o);
		goto done;
	}
	if ((n && (rc = check_local(c, names)) < 0) || (rc = run_names(&r, names)) < 0 || (rc = push_run(&r)) != 0 ||
	    (rc = report_short(&r, min, &short_n)) != 0 || (rc = report_end(&r, "push", short_n)) != 0)
		goto done;
	rc = outcome(&r, short_n, min);
done:
	run_free(&r);
	json_decref(names);
	return rc;
}

/* Pull each collection of r from the first reachable peer that holds it:
 * its placement first, then any other. */
static int pull_run(struct run *r, json_t *held)
{
	json_t *per;
	size_t i, k;
	int rc = 0;

	for (;;) {
		if (!(per = json_object()))
			return opt_error_set(OPT_EIO, "out of memory");
		for (i = 0; i < r->nc; i++) {
			struct cstate *cs = &r->cs[i];
			size_t cand[OPT_CLUSTER_PEERS_MAX * 2], nc = 0, p;
			if (cs->home_ok || cs->failed)
				continue;
			for (k = 0; k < cs->np; k++)
				cand[nc++] = cs->place[k];
			for (p = 0; p < r->c->n; p++) {
				for (k = 0; k < cs->np && cs->place[k] != p; k++)
					;
				if (k == cs->np)
					cand[nc++] = p;
			}
			for (k = (size_t)(cs->acting + 1); k < nc; k++)
				if (!r->down[cand[k]] && holds(held, r->c->peers[cand[k]], cs->name))
					break;
			if (k >= nc)
				continue;
			cs->acting = (int)k;
			cluster_per_add(per, cand[k], cs->name);
		}
		k = json_object_size(per);
		rc = phase(r, per, OP_PULL, 1);
		json_decref(per);
		if (rc || k == 0)
			return rc;
	}
}

/* Run the home sessions of a pull (jobs, one per peer): all at once,
 * unless a multi-collection transaction of ours that was not pushed
 * spans collections of several homes; then a session whose replay could
 * touch what another one replays runs after it (as the sessions of a
 * push round do: two replays of one transaction at once fail, exit 3,
 * against each other). */
static int pull_home_waves(struct run *r, struct job *jobs, size_t nj, const json_t *only)
{
	json_t *local = NULL, **homed = calloc(nj + 1, sizeof(*homed));
	size_t *ends = calloc(nj + 1, sizeof(*ends)), nw = 0, i, w, start = 0;
	int rc;

	if (!homed || !ends) {
		rc = opt_error_set(OPT_EIO, "out of memory");
		goto done;
	}
	/* what each session may replay: our collections it is the home of */
	if ((rc = opt_store_list(r->c->s, &local)) < 0)
		goto done;
	sort_names(local);
	for (i = 0; i < nj; i++)
		if (!(homed[i] = json_array())) {
			rc = opt_error_set(OPT_EIO, "out of memory");
			goto done;
		}
	for (i = 0; i < json_array_size(local); i++) {
		const char *name = json_string_value(json_array_get(local, i));
		size_t idx[OPT_CLUSTER_PEERS_MAX];
		if ((json_array_size(only) && !cluster_has_name(only, name)) || place(r->c, name, idx) == 0)
			continue;
		for (w = 0; w < nj; w++)
			if (jobs[w].peer == idx[0])
				json_array_append_new(homed[w], json_string(name));
	}
	if ((rc = clash_waves(r, jobs, homed, nj, ends, &nw)) < 0)
		goto done;
	for (w = 0; rc == 0 && w < nw; start = ends[w++])
		rc = cluster_run_jobs(r->c, jobs + start, ends[w] - start, OP_PULL_HOME, r->o);
done:
	for (i = 0; homed && i < nj; i++)
		json_decref(homed[i]);
	free(homed);
	free(ends);
	json_decref(local);
	return rc;
}

/* The first round of a pull: one session per peer (in parallel), which
 * lists the peer's collections and pulls, over the same connection, those
 * the peer is the home of (among only, if set).  Then *held gets {peer:
 * {collection: true}} for the peers that answered (the others are down),
 * *names (when only is NULL) every collection here or on a peer, and the
 * run's collections are set up, those pulled done; the others are left
 * to the replicas (pull_run). */
static int pull_homes(struct run *r, json_t *only, json_t **held, json_t **names)
{
	struct job *jobs = calloc(r->c->n + 1, sizeof(*jobs));
	json_t *none = json_array();
	size_t i, k, nj = r->c->n;
	int rc;

	*held = json_object();
	if (!jobs || !none || !*held) {
		free(jobs);
		json_decref(none);
		return opt_error_set(OPT_EIO, "out of memory");
	}
	for (i = 0; i < nj; i++) {
		jobs[i].peer = i;
		jobs[i].names = json_array();
		jobs[i].only = only ? only : none;
	}
	rc = pull_home_waves(r, jobs, nj, only);
	for (i = 0; rc == 0 && i < nj; i++) {
		json_t *set;
		if (jobs[i].rc == OPT_ENET || !jobs[i].held)
			continue;  /* down (or it never listed) */
		set = json_object();
		for (k = 0; k < json_array_size(jobs[i].held); k++)
			json_object_set_new(set, json_string_value(json_array_get(jobs[i].held, k)), json_true());
		json_object_set_new(*held, r->c->peers[jobs[i].peer], set);
	}
	if (rc == 0 && !only)
		rc = all_names(r->c, *held, names);
	if (rc == 0)
		rc = run_names(r, *names);
	for (i = 0; rc == 0 && i < nj; i++) {
		/* a peer that answered but whose pull failed (what it gave was
		 * refused, a conflict): the collections it is the home of
		 * failed, as they would have in a pull of just those (settle
		 * reports them); the peer is not down */
		if (jobs[i].rc >= 0 || jobs[i].rc == OPT_ENET)
			continue;
		for (k = 0; k < json_array_size(jobs[i].held); k++) {
			const char *name = json_string_value(json_array_get(jobs[i].held, k));
			size_t idx[OPT_CLUSTER_PEERS_MAX];
			if (find_c(r, name) && place(r->c, name, idx) > 0 && idx[0] == jobs[i].peer)
				add_name(jobs[i].names, name);
		}
	}
	if (rc == 0)
		rc = settle(r, jobs, nj, 1);
	/* the homes were asked: the replicas come next */
	for (i = 0; rc == 0 && i < r->nc; i++)
		r->cs[i].acting = 0;
	cluster_jobs_free(jobs, nj);
	json_decref(none);
	return rc;
}

int opt_cluster_pull(struct opt_cluster *c, const char *const *colls, size_t n, const struct opt_cluster_opts *o)
{
	struct run r;
	json_t *names = NULL, *held = NULL, *local = NULL;
	size_t i, short_n = 0;
	int rc, missing = 0;

	run_begin(&r, c, o);
	if ((rc = need_peers(c)) < 0)
		return rc;
	if ((n && (rc = names_of(c, colls, n, &names)) < 0) || (rc = pull_homes(&r, names, &held, &names)) != 0 ||
	    (rc = pull_run(&r, held)) != 0)
		goto done;
	if ((rc = opt_store_list(c->s, &local)) < 0)
		goto done;
	sort_names(local);
	for (i = 0; i < r.nc; i++) {
		struct cstate *cs = &r.cs[i];
		const char *peer;
		json_t *set;
		int anywhere = 0;
		if (cs->home_ok || cs->failed)
			continue;
		json_object_foreach(held, peer, set)
			if (json_object_get(set, cs->name))
				anywhere = 1;
		if (anywhere) {
			short_n++;
			rc = emit(o, json_pack("{s:s,s:s}", "collection", cs->name, "status", "unavailable"));
		} else if (n && !cluster_has_name(local, cs->name)) {
			missing++;
			rc = emit(o, json_pack("{s:s,s:s}", "collection", cs->name, "status", "not-found"));
		} else {
			/* only here, or on a peer that is down */
			int down = 0;
			size_t p;
			for (p = 0; p < c->n; p++)
				down |= r.down[p];
			if (down)
				short_n++;
			rc = emit(o, json_pack("{s:s,s:s}", "collection", cs->name, "status",
					       down ? "unavailable" : "local-only"));
		}
		if (rc)
			goto done;
	}
	if ((rc = report_end(&r, "pull", short_n)) != 0)
		goto done;
	rc = outcome(&r, short_n, 1);
	if (rc == 0 && missing)
		rc = opt_error_set(OPT_ENOTFOUND, "%d collection%s on no peer", missing, missing == 1 ? " is" : "s are");
done:
	run_free(&r);
	json_decref(names);
	json_decref(held);
	json_decref(local);
	return rc;
}

/* Fold the outcome of the side run pr into r. */
static void run_absorb(struct run *r, const struct run *pr)
{
	r->sessions += pr->sessions;
	if (pr->worst && !r->worst) {
		r->worst = pr->worst;
		snprintf(r->worst_msg, sizeof(r->worst_msg), "%s", pr->worst_msg);
	}
}

/* Take out of per (peer -> names) the collections not in local (made
 * sorted here): a failed record for each. */
static int drop_missing(struct run *r, json_t *per, json_t *local)
{
	const char *key;
	json_t *names;
	size_t k;
	int rc;

	sort_names(local);
	json_object_foreach(per, key, names) {
		for (k = json_array_size(names); k > 0; k--) {
			const char *name = json_string_value(json_array_get(names, k - 1));
			if (cluster_has_name(local, name))
				continue;
			if ((rc = emit(r->o, json_pack("{s:s,s:s,s:s,s:s}", "remote", r->c->peers[strtoul(key, NULL, 10)],
						       "collection", name, "status", "failed", "error",
						       "no reachable peer holding it could give it"))) != 0)
				return rc;
			json_array_remove(names, k - 1);
		}
	}
	return 0;
}

/* Remove the misplaced copies (peer -> names): first push those
 * collections to their whole placement; a copy goes only when every peer
 * of the placement took ours and the copy holds nothing we lack
 * (opt_sync_remove checks that at the peer, by compare-and-swap). */
static int prune(struct run *r, json_t *misplaced)
{
	struct run pr;
	json_t *names = json_array(), *rm = json_object(), *v;
	const char *key;
	size_t k;
	int rc;

	run_begin(&pr, r->c, r->o);
	memcpy(pr.down, r->down, sizeof(pr.down));
	if (!names || !rm) {
		rc = opt_error_set(OPT_EIO, "out of memory");
		goto done;
	}
	{
		json_t *set = json_object(), *t;
		const char *name;
		json_object_foreach(misplaced, key, v)
			for (k = 0; k < json_array_size(v); k++)
				json_object_set_new(set, json_string_value(json_array_get(v, k)), json_true());
		json_object_foreach(set, name, t)
			json_array_append_new(names, json_string(name));
		json_decref(set);
	}
	sort_names(names);
	if ((rc = check_local(r->c, names)) < 0) {
		/* what this store lacks could not be checked against ours */
		json_t *local = NULL, *keep = json_array();
		opt_error_clear();
		if ((rc = opt_store_list(r->c->s, &local)) < 0) {
			json_decref(keep);
			goto done;
		}
		sort_names(local);
		for (k = 0; k < json_array_size(names); k++)
			if (cluster_has_name(local, json_string_value(json_array_get(names, k))))
				json_array_append(keep, json_array_get(names, k));
		json_decref(local);
		json_decref(names);
		names = keep;
	}
	if ((rc = run_names(&pr, names)) < 0 || (rc = push_run(&pr)) != 0)
		goto done;
	json_object_foreach(misplaced, key, v)
		for (k = 0; k < json_array_size(v); k++) {
			struct cstate *cs = find_c(&pr, json_string_value(json_array_get(v, k)));
			if (cs && json_array_size(cs->reached) >= cs->np)
				cluster_per_add(rm, strtoul(key, NULL, 10), cs->name);
		}
	rc = phase(r, rm, OP_REMOVE, 0);
done:
	run_absorb(r, &pr);
	run_free(&pr);
	json_decref(names);
	json_decref(rm);
	return rc;
}

/* The index of peer in c's list (c->n when absent). */
static size_t peer_at(const struct opt_cluster *c, const char *peer)
{
	size_t k;

	for (k = 0; k < c->n && strcmp(c->peers[k], peer) != 0; k++)
		;
	return k;
}

/* What a rebalance finds and plans: who holds what (peer -> set of
 * names), what this store holds, and the moves (peer index -> names). */
struct rplan {
	json_t *held, *local;
	json_t *per;        /* the pushes */
	json_t *fetch;      /* what this store lacks and must pull first */
	json_t *misplaced;  /* copies outside their placement */
};

/* Where collection cs is: the peers of its placement that hold it go to
 * cs->reached, those up that lack it to to; each copy outside the
 * placement is reported and noted as misplaced.  *from: "local" when this
 * store holds it, else the first peer that does (NULL: none). */
static int rebalance_where(struct run *r, struct cstate *cs, struct rplan *pl, json_t *to, const char **from)
{
	const char *peer;
	json_t *set;
	size_t k;
	int rc;

	*from = cluster_has_name(pl->local, cs->name) ? "local" : NULL;
	for (k = 0; k < cs->np; k++) {
		const char *p = r->c->peers[cs->place[k]];
		if (holds(pl->held, p, cs->name))
			json_array_append_new(cs->reached, json_string(p));
		else if (!r->down[cs->place[k]])
			json_array_append_new(to, json_string(p));
	}
	json_object_foreach(pl->held, peer, set) {
		if (!json_object_get(set, cs->name))
			continue;
		if (!*from)
			*from = peer;
		for (k = 0; k < cs->np && strcmp(r->c->peers[cs->place[k]], peer) != 0; k++)
			;
		if (k < cs->np)
			continue;
		cluster_per_add(pl->misplaced, peer_at(r->c, peer), cs->name);
		if ((rc = emit(r->o, json_pack("{s:s,s:s,s:s}", "remote", peer, "collection", cs->name, "status",
					       "misplaced"))) != 0)
			return rc;
	}
	return 0;
}

/* Plan the moves of collection cs: a dry run reports them (and counts
 * them as done, for the report of what would stay short); a run notes
 * the pushes, and the pull first when this store lacks it. */
static int rebalance_plan(struct run *r, struct cstate *cs, struct rplan *pl)
{
	json_t *to = json_array();
	const char *from;
	size_t k;
	int rc;

	if ((rc = rebalance_where(r, cs, pl, to, &from)) != 0)
		goto done;
	if (r->o->sync.dry_run) {
		/* the plan's outcome: the peers that would hold it */
		cs->home_ok = cs->np && !r->down[cs->place[0]];
		for (k = 0; k < json_array_size(to); k++)
			add_name(cs->reached, json_string_value(json_array_get(to, k)));
		if (json_array_size(to) > 0)
			rc = emit(r->o, json_pack("{s:s,s:s,s:O,s:s,s:b}", "collection", cs->name, "from", from, "to", to,
						  "status", "planned", "dry_run", 1));
		goto done;
	}
	if (json_array_size(to) == 0)
		goto done;
	if (strcmp(from, "local") != 0)
		json_array_append_new(pl->fetch, json_string(cs->name));
	for (k = 0; k < json_array_size(to); k++)
		cluster_per_add(pl->per, peer_at(r->c, json_string_value(json_array_get(to, k))), cs->name);
done:
	json_decref(to);
	return rc;
}

/* What this store lacks comes from a peer holding it first; what could
 * not be pulled cannot be pushed on. */
static int rebalance_fetch(struct run *r, struct rplan *pl)
{
	struct run pr;
	int rc;

	run_begin(&pr, r->c, r->o);
	memcpy(pr.down, r->down, sizeof(pr.down));
	if ((rc = run_names(&pr, pl->fetch)) == 0)
		rc = pull_run(&pr, pl->held);
	run_absorb(r, &pr);
	run_free(&pr);
	if (rc)
		return rc;
	json_decref(pl->local);
	pl->local = NULL;
	if ((rc = opt_store_list(r->c->s, &pl->local)) < 0)
		return rc;
	return drop_missing(r, pl->per, pl->local);
}

int opt_cluster_rebalance(struct opt_cluster *c, const struct opt_cluster_opts *o)
{
	struct run r;
	struct rplan pl = { NULL, NULL, json_object(), json_array(), json_object() };
	json_t *names = NULL;
	size_t i, short_n = 0;
	int rc;

	run_begin(&r, c, o);
	if ((rc = need_peers(c)) < 0)
		goto done;
	if ((rc = list_peers(&r, &pl.held)) != 0 || (rc = all_names(c, pl.held, &names)) < 0 ||
	    (rc = run_names(&r, names)) < 0 || (rc = opt_store_list(c->s, &pl.local)) < 0)
		goto done;
	sort_names(pl.local);
	for (i = 0; i < r.nc; i++)
		if ((rc = rebalance_plan(&r, &r.cs[i], &pl)) != 0)
			goto done;
	if (!o->sync.dry_run && json_array_size(pl.fetch) > 0 && (rc = rebalance_fetch(&r, &pl)) != 0)
		goto done;
	if (!o->sync.dry_run && (rc = phase(&r, pl.per, OP_PUSH, 0)) != 0)
		goto done;
	if (o->prune && !o->sync.dry_run && (rc = prune(&r, pl.misplaced)) != 0)
		goto done;
	/* a dry run says what the run would leave short (and exits as it would) */
	if ((rc = report_short(&r, (long)opt_cluster_replicas(c), &short_n)) != 0)
		goto done;
	if ((rc = report_end(&r, "rebalance", short_n)) != 0)
		goto done;
	rc = outcome(&r, short_n, (long)opt_cluster_replicas(c));
done:
	run_free(&r);
	json_decref(names);
	json_decref(pl.held);
	json_decref(pl.local);
	json_decref(pl.per);
	json_decref(pl.fetch);
	json_decref(pl.misplaced);
	return rc;
}
