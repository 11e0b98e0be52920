#include "sync.h"
#include "chain.h"
#include "collection.h"
#include "error.h"
#include "gitutil.h"
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
#include <git2.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define REF_COLL "refs/opt/collections/"
#define REF_REMOTES "refs/opt/remotes/"
#define REF_INCOMING "refs/opt/incoming/"
#define REF_BACKUP "refs/opt/sync/backup/"
#define REF_PUSH "refs/opt/sync/push/"
#define REPLAY_PREFIX "replay "
#define REFLEN (64 + OPT_REMOTE_NAME_MAX + OPT_NAME_MAX)

struct opt_sync {
	struct opt_store *s;
	git_repository *repo;
	int lockfd;
	const struct opt_sync_opts *o;
	const char *url;             /* opt_sync_pull_url: the remote's URL */
	int partial;                 /* the last pull did all but skip collections */
};

/* A remote being worked with. */
struct remote {
	char name[OPT_REMOTE_NAME_MAX + 1];
	char *url;
	char *path;                  /* a repository on this machine, else NULL */
	struct opt_store *peer;      /* opened path remote */
	git_repository *peer_repo;
	int cred_tries;
	int no_verify;               /* http.sslVerify=false: any certificate */
	const struct opt_sync_opts *o;
	/* push */
	int conflict;
	char push_msg[256];
	const git_oid *expect;       /* what the remote ref must hold (NULL: absent) */
	/* a push of several refs at once (push_net_many) */
	size_t nb;
	const char **bnames;         /* collection names */
	const git_oid **bexpect;     /* what each remote ref must hold (NULL: absent) */
	int *bres;                   /* per ref: 0, or OPT_ECONFLICT when it moved */
	int force;                   /* the push need not fast-forward (a replica's repair) */
	git_remote *conn;            /* connected to receive-pack: the next push goes over it */
	/* collections of the remote we cannot take (their names): escaped
	 * name -> {"code", "error"} */
	json_t *skipped;
	char view[PATH_MAX];         /* a path remote read through a view ("": none) */
};

/* One collection as the two sides have it. */
struct head {
	char *name;
	git_oid old, new;            /* tracking ref before; remote head now */
	int has_old, has_new;
	const char *status;          /* fetch: new, updated, unchanged */
};

struct heads {
	struct head *v;
	size_t n, cap;
};

static const struct opt_sync_opts no_opts;

static int close_over_transactions(struct opt_sync *y, const char *from_prefix, const char *stop_prefix,
				   json_t *names, int *grew);

/* ---- small helpers ---- */

static long busy_timeout(const struct opt_sync_opts *o)
{
	const char *e;

	if (o && o->busy_timeout_ms > 0)
		return o->busy_timeout_ms;
	e = getenv("OPT_BUSY_TIMEOUT");
	if (e && *e && atol(e) > 0)
		return atol(e);
	return 30000;
}

static void progress(const struct opt_sync_opts *o, const char *what, size_t done, size_t total)
{
	if (o && o->progress)
		o->progress(what, done, total, o->arg);
}

static void hex_of(char out[GIT_OID_HEXSZ + 1], const git_oid *id)
{
	git_oid_tostr(out, GIT_OID_HEXSZ + 1, id);
}

static void heads_clear(struct heads *h)
{
	size_t i;

	for (i = 0; i < h->n; i++)
		free(h->v[i].name);
	free(h->v);
	memset(h, 0, sizeof(*h));
}

static struct head *heads_add(struct heads *h, const char *name)
{
	struct head *e;

	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 16;
		struct head *nv = realloc(h->v, cap * sizeof(*nv));
		if (!nv)
			return NULL;
		h->v = nv;
		h->cap = cap;
	}
	e = &h->v[h->n];
	memset(e, 0, sizeof(*e));
	if (!(e->name = strdup(name)))
		return NULL;
	h->n++;
	return e;
}

static struct head *heads_find(struct heads *h, const char *name)
{
	size_t i;

	for (i = 0; i < h->n; i++)
		if (strcmp(h->v[i].name, name) == 0)
			return &h->v[i];
	return NULL;
}

static int cmp_head(const void *a, const void *b)
{
	return strcmp(((const struct head *)a)->name, ((const struct head *)b)->name);
}

/* Compare-and-swap ref name from old (NULL: absent) to new (NULL: delete),
 * retrying a held lock until the deadline.  OPT_ECONFLICT when it holds
 * another value. */
static int ref_cas(git_repository *repo, const char *name, const git_oid *new, const git_oid *old,
		   int64_t deadline)
{
	git_reference *r = NULL;
	git_oid zero;
	unsigned tries = 0;
	int rc;

	memset(&zero, 0, sizeof(zero));
	for (;;) {
		git_error_clear();
		if (new) {
			rc = git_reference_create_matching(&r, repo, name, new, 1, old ? old : &zero, "opt-sync");
			git_reference_free(r);
			r = NULL;
		} else {
			git_oid cur;
			rc = git_reference_lookup(&r, repo, name);
			if (rc == GIT_ENOTFOUND)
				return old ? opt_error_set(OPT_ECONFLICT, "ref '%s' is gone", name) : 0;
			if (rc == 0) {
				cur = *git_reference_target(r);
				if (old && !git_oid_equal(&cur, old))
					rc = GIT_EMODIFIED;
				else
					rc = git_reference_delete(r);
			}
			git_reference_free(r);
			r = NULL;
		}
		if (rc == 0)
			return 0;
		if (rc == GIT_EMODIFIED || rc == GIT_EEXISTS || (rc == GIT_ENOTFOUND && old))
			return opt_error_set(OPT_ECONFLICT, "ref '%s' changed meanwhile", name);
		if (rc != GIT_ELOCKED)
			return opt_git_fail(OPT_EIO, "cannot update ref");
		if (opt_now_ms() >= deadline)
			return opt_error_set(OPT_EBUSY, "ref '%s' stayed locked", name);
		opt_sleep_ms(opt_backoff_ms(tries < 8 ? tries : 8, 2, 100));
		tries++;
	}
}

/* Names of the refs under prefix (the part after it), sorted. */
static int refs_under(git_repository *repo, const char *prefix, json_t **out)
{
	git_reference_iterator *it = NULL;
	const char *name;
	size_t pl = strlen(prefix);
	json_t *arr = json_array();
	int err;

	*out = NULL;
	if (!arr)
		return opt_error_set(OPT_EIO, "out of memory");
	if (git_reference_iterator_new(&it, repo) < 0) {
		json_decref(arr);
		return opt_git_fail(OPT_EIO, "cannot list refs");
	}
	while ((err = git_reference_next_name(&name, it)) == 0)
		if (strncmp(name, prefix, pl) == 0 && name[pl])
			json_array_append_new(arr, json_string(name + pl));
	git_reference_iterator_free(it);
	if (err != GIT_ITEROVER) {
		json_decref(arr);
		return opt_git_fail(OPT_EIO, "cannot list refs");
	}
	{
		/* sort (few refs: insertion sort of the strings) */
		size_t i, j, n = json_array_size(arr);
		for (i = 1; i < n; i++)
			for (j = i; j > 0 && strcmp(json_string_value(json_array_get(arr, j - 1)),
						     json_string_value(json_array_get(arr, j))) > 0; j--) {
				json_t *a = json_incref(json_array_get(arr, j - 1));
				json_array_set(arr, j - 1, json_array_get(arr, j));
				json_array_set_new(arr, j, a);
			}
	}
	*out = arr;
	return 0;
}

/* The revision of collection name at commit id (0 when unreadable). */
static long rev_of(struct opt_sync *y, const char *name, const git_oid *id)
{
	struct opt_snap *snap = NULL;
	char hex[GIT_OID_HEXSZ + 1];
	long rev = 0;

	hex_of(hex, id);
	if (opt_snap_open_commit(&snap, y->s, name, hex) == 0)
		rev = opt_snap_rev(snap);
	else
		opt_error_clear();
	opt_snap_free(snap);
	return rev;
}

/* 1 if commit a descends from b (a != b), 0 if not, <0 on failure. */
static int descends(git_repository *repo, const git_oid *a, const git_oid *b)
{
	int rc = git_graph_descendant_of(repo, a, b);

	if (rc < 0)
		return opt_git_fail(OPT_EINTEGRITY, "cannot compare histories");
	return rc;
}

/* 1 if the object is in the store. */
static int have_object(struct opt_sync *y, const git_oid *id)
{
	git_odb *odb = NULL;
	int rc = 0;

	if (git_repository_odb(&odb, y->repo) == 0)
		rc = git_odb_exists(odb, id);
	git_odb_free(odb);
	return rc;
}

/* ---- names, URLs, remotes ---- */

int opt_sync_remote_name_valid(const char *name)
{
	size_t n, i;

	if (!name)
		return 0;
	n = strlen(name);
	if (n == 0 || n > OPT_REMOTE_NAME_MAX || name[0] == '.' || name[0] == '-')
		return 0;
	for (i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
		      c == '_' || c == '-'))
			return 0;
	}
	if (strstr(name, ".."))
		return 0;
	if (n >= 5 && strcmp(name + n - 5, ".lock") == 0)
		return 0;
	return 1;
}

/* Make path absolute (relative to the current directory), without
 * resolving symbolic links; "." and ".." components are folded. */
static char *absolute(const char *path)
{
	char cwd[PATH_MAX], *buf, *out, *tok, *save = NULL;
	size_t n;

	if (path[0] == '/') {
		buf = strdup(path);
	} else {
		if (!getcwd(cwd, sizeof(cwd)))
			return NULL;
		n = strlen(cwd) + strlen(path) + 2;
		if (!(buf = malloc(n)))
			return NULL;
		snprintf(buf, n, "%s/%s", cwd, path);
	}
	if (!buf)
		return NULL;
	out = calloc(1, strlen(buf) + 2);
	if (!out) {
		free(buf);
		return NULL;
	}
	for (tok = strtok_r(buf, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
		if (strcmp(tok, ".") == 0)
			continue;
		if (strcmp(tok, "..") == 0) {
			char *sl = strrchr(out, '/');
			if (sl)
				*sl = '\0';
			continue;
		}
		strcat(out, "/");
		strcat(out, tok);
	}
	if (!*out)
		strcpy(out, "/");
	free(buf);
	return out;
}

int opt_sync_url_is_local(const char *url, char **path)
{
	const char *p, *colon, *slash;

	if (path)
		*path = NULL;
	if (!url || !*url)
		return 0;
	if (strncmp(url, "file://", 7) == 0) {
		p = url + 7;
		if (*p != '/')
			return 0;  /* file://host/path: not ours */
	} else if (strstr(url, "://")) {
		return 0;
	} else {
		/* scp-like "host:path" is ssh: a colon before any slash */
		colon = strchr(url, ':');
		slash = strchr(url, '/');
		if (colon && (!slash || colon < slash) && url[0] != '.' && url[0] != '/')
			return 0;
		p = url;
	}
	if (path && !(*path = absolute(p)))
		return 0;
	return 1;
}

int opt_sync_open(struct opt_sync **out, struct opt_store *s)
{
	struct opt_sync *y;

	*out = NULL;
	y = calloc(1, sizeof(*y));
	if (!y)
		return opt_error_set(OPT_EIO, "out of memory");
	y->s = s;
	y->lockfd = -1;
	if (git_repository_open_ext(&y->repo, opt_store_path(s), GIT_REPOSITORY_OPEN_NO_SEARCH | GIT_REPOSITORY_OPEN_BARE,
				    NULL) < 0) {
		free(y);
		return opt_git_fail(OPT_EIO, "cannot open store");
	}
	*out = y;
	return 0;
}

void opt_sync_free(struct opt_sync *y)
{
	if (!y)
		return;
	if (y->lockfd >= 0)
		close(y->lockfd);
	git_repository_free(y->repo);
	free(y);
}

int opt_sync_lock(struct opt_sync *y, long timeout_ms)
{
	char path[PATH_MAX];
	int64_t deadline;
	unsigned tries = 0;

	if (y->lockfd >= 0)
		return 0;
	snprintf(path, sizeof(path), "%s/opt-sync.lock", opt_store_path(y->s));
	y->lockfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (y->lockfd < 0)
		return opt_error_set(OPT_EIO, "cannot open '%s': %s", path, strerror(errno));
	deadline = opt_now_ms() + (timeout_ms > 0 ? timeout_ms : busy_timeout(NULL));
	while (flock(y->lockfd, LOCK_EX | LOCK_NB) < 0) {
		if (errno != EWOULDBLOCK && errno != EINTR) {
			close(y->lockfd);
			y->lockfd = -1;
			return opt_error_set(OPT_EIO, "cannot lock '%s': %s", path, strerror(errno));
		}
		if (opt_now_ms() >= deadline) {
			close(y->lockfd);
			y->lockfd = -1;
			return opt_error_set(OPT_EBUSY, "another sync of store '%s' is running (it holds %s)",
					     opt_store_path(y->s), path);
		}
		opt_sleep_ms(opt_backoff_ms(tries < 6 ? tries : 6, 10, 500));
		tries++;
	}
	return 0;
}

static int delete_refs_under(git_repository *repo, const char *prefix)
{
	json_t *names = NULL;
	char ref[REFLEN];
	size_t i;
	int rc;

	if ((rc = refs_under(repo, prefix, &names)) < 0)
		return rc;
	for (i = 0; i < json_array_size(names) && rc == 0; i++) {
		snprintf(ref, sizeof(ref), "%s%s", prefix, json_string_value(json_array_get(names, i)));
		rc = ref_cas(repo, ref, NULL, NULL, opt_now_ms() + busy_timeout(NULL));
	}
	json_decref(names);
	return rc;
}

/* libgit2 1.5 leaks a regex match block on every config entry that a
 * pattern does not match (git_regexp_match returns before freeing it),
 * and git_remote_lookup, _list, _delete and the insteadOf rewriting of
 * git_remote_create all match patterns: remotes are read and written
 * here through plain config calls instead. */

/* A new reference to the store's config (fresh from disk). */
static int config_of(struct opt_sync *y, git_config **out)
{
	if (git_repository_config(out, y->repo) < 0)
		return opt_git_fail(OPT_EIO, "cannot read the store's configuration");
	return 0;
}

/* An anonymous remote for url, without insteadOf rewriting. */
static int anon_remote(git_remote **out, git_repository *repo, const char *url)
{
	git_remote_create_options co;

	git_remote_create_options_init(&co, GIT_REMOTE_CREATE_OPTIONS_VERSION);
	co.repository = repo;
	co.flags = GIT_REMOTE_CREATE_SKIP_INSTEADOF | GIT_REMOTE_CREATE_SKIP_DEFAULT_FETCHSPEC;
	return git_remote_create_with_opts(out, url, &co);
}

/* The URL of remote name: *url malloc'd; OPT_ENOTFOUND when there is no
 * such remote. */
static int remote_url(struct opt_sync *y, const char *name, char **url)
{
	git_config *cfg = NULL;
	git_buf buf = { 0 };
	char key[OPT_REMOTE_NAME_MAX + 16];
	int rc;

	*url = NULL;
	if (!opt_sync_remote_name_valid(name))
		return opt_error_set(OPT_ENOTFOUND, "no remote '%s'", opt_esc(name));
	if ((rc = config_of(y, &cfg)) < 0)
		return rc;
	snprintf(key, sizeof(key), "remote.%s.url", name);
	rc = git_config_get_string_buf(&buf, cfg, key);
	if (rc == GIT_ENOTFOUND) {
		git_error_clear();
		rc = opt_error_set(OPT_ENOTFOUND, "no remote '%s' (opt-sync remote add %s URL)", name, name);
	} else if (rc < 0) {
		rc = opt_git_fail(OPT_EIO, "cannot read remote");
	} else if (!buf.ptr || !*buf.ptr) {
		rc = opt_error_set(OPT_EINVAL, "remote '%s' has no URL", name);
	} else if (!(*url = strdup(buf.ptr))) {
		rc = opt_error_set(OPT_EIO, "out of memory");
	}
	git_buf_dispose(&buf);
	git_config_free(cfg);
	return rc;
}

int opt_sync_remote_add(struct opt_sync *y, const char *name, const char *url)
{
	git_config *cfg = NULL;
	char *path = NULL, *fixed = NULL, *old = NULL, key[OPT_REMOTE_NAME_MAX + 16];
	int rc;

	if (!opt_sync_remote_name_valid(name))
		return opt_error_set(OPT_EINVAL, "invalid remote name '%s' (use letters, digits, '.', '_' and '-')", opt_esc(name));
	if (!url || !*url || strchr(url, '\n'))
		return opt_error_set(OPT_EINVAL, "invalid remote URL '%s'", opt_esc(url ? url : ""));
	if (opt_sync_url_is_local(url, &path) && strncmp(url, "file://", 7) != 0)
		fixed = path;  /* a relative path would depend on where we run */
	else
		free(path);
	rc = remote_url(y, name, &old);
	free(old);
	if (rc == 0) {
		rc = opt_error_set(OPT_ECONFLICT, "remote '%s' exists already", name);
		goto done;
	}
	if (rc != OPT_ENOTFOUND)
		goto done;
	opt_error_clear();
	if ((rc = config_of(y, &cfg)) < 0)
		goto done;
	snprintf(key, sizeof(key), "remote.%s.url", name);
	if (git_config_set_string(cfg, key, fixed ? fixed : url) < 0)
		rc = opt_git_fail(OPT_EIO, "cannot add remote");
done:
	git_config_free(cfg);
	free(fixed);
	return rc;
}

struct names_ctx {
	json_t *names;   /* remote names, or the keys of one remote */
	const char *only;
};

/* Collect remote names ("remote.NAME.url"), or with only set, every key
 * of remote `only`. */
static int names_cb(const git_config_entry *e, void *arg)
{
	struct names_ctx *n = arg;
	const char *k = e->name, *dot;
	char name[OPT_REMOTE_NAME_MAX + 1];
	size_t len;

	if (strncmp(k, "remote.", 7) != 0)
		return 0;
	k += 7;
	if (!(dot = strrchr(k, '.')))
		return 0;
	len = (size_t)(dot - k);
	if (len == 0 || len > OPT_REMOTE_NAME_MAX)
		return 0;
	memcpy(name, k, len);
	name[len] = '\0';
	if (n->only) {
		if (strcmp(name, n->only) == 0)
			json_array_append_new(n->names, json_string(e->name));
		return 0;
	}
	if (strcmp(dot + 1, "url") == 0 && opt_sync_remote_name_valid(name)) {
		size_t i;
		for (i = 0; i < json_array_size(n->names); i++)
			if (strcmp(json_string_value(json_array_get(n->names, i)), name) == 0)
				return 0;
		json_array_append_new(n->names, json_string(name));
	}
	return 0;
}

int opt_sync_remote_rm(struct opt_sync *y, const char *name)
{
	struct names_ctx n = { NULL, name };
	git_config *cfg = NULL;
	char *url = NULL, prefix[REFLEN];
	size_t i;
	int rc;

	if ((rc = remote_url(y, name, &url)) < 0)
		return rc;
	free(url);
	if ((rc = config_of(y, &cfg)) < 0)
		return rc;
	n.names = json_array();
	if (!n.names || git_config_foreach(cfg, names_cb, &n) < 0) {
		rc = opt_git_fail(OPT_EIO, "cannot read the store's configuration");
		goto done;
	}
	for (i = 0; i < json_array_size(n.names); i++) {
		const char *k = json_string_value(json_array_get(n.names, i));
		git_error_clear();
		if (git_config_delete_entry(cfg, k) < 0 && git_config_delete_multivar(cfg, k, ".*") < 0) {
			rc = opt_git_fail(OPT_EIO, "cannot remove remote");
			goto done;
		}
	}
	snprintf(prefix, sizeof(prefix), REF_REMOTES "%s/", name);
	rc = delete_refs_under(y->repo, prefix);
done:
	json_decref(n.names);
	git_config_free(cfg);
	return rc;
}

int opt_sync_remote_list(struct opt_sync *y, json_t **out)
{
	struct names_ctx n = { NULL, NULL };
	git_config *cfg = NULL;
	json_t *arr;
	size_t i, j, cnt;
	int rc;

	*out = NULL;
	if ((rc = config_of(y, &cfg)) < 0)
		return rc;
	n.names = json_array();
	if (!n.names || git_config_foreach(cfg, names_cb, &n) < 0) {
		json_decref(n.names);
		git_config_free(cfg);
		return opt_git_fail(OPT_EIO, "cannot list remotes");
	}
	git_config_free(cfg);
	cnt = json_array_size(n.names);
	for (i = 1; i < cnt; i++)
		for (j = i; j > 0 && strcmp(json_string_value(json_array_get(n.names, j - 1)),
					     json_string_value(json_array_get(n.names, j))) > 0; j--) {
			json_t *t = json_incref(json_array_get(n.names, j - 1));
			json_array_set(n.names, j - 1, json_array_get(n.names, j));
			json_array_set_new(n.names, j, t);
		}
	arr = json_array();
	for (i = 0; arr && i < cnt; i++) {
		char *url = NULL;
		const char *name = json_string_value(json_array_get(n.names, i));
		if (remote_url(y, name, &url) < 0) {
			opt_error_clear();
			continue;
		}
		json_array_append_new(arr, json_pack("{s:s,s:s}", "name", name, "url", url));
		free(url);
	}
	json_decref(n.names);
	if (!arr)
		return opt_error_set(OPT_EIO, "out of memory");
	*out = arr;
	return 0;
}

int opt_sync_remote_default(struct opt_sync *y, char **out)
{
	json_t *arr = NULL;
	size_t i, n;
	int rc;

	*out = NULL;
	if ((rc = opt_sync_remote_list(y, &arr)) < 0)
		return rc;
	n = json_array_size(arr);
	for (i = 0; i < n; i++)
		if (strcmp(json_string_value(json_object_get(json_array_get(arr, i), "name")), "origin") == 0)
			break;
	if (i == n && n == 1)
		i = 0;
	if (i < n)
		*out = strdup(json_string_value(json_object_get(json_array_get(arr, i), "name")));
	json_decref(arr);
	if (n == 0)
		return opt_error_set(OPT_ENOTFOUND, "the store has no remote (opt-sync remote add NAME URL)");
	if (i == n)
		return opt_error_set(OPT_EINVAL, "the store has several remotes and none is 'origin': name one");
	return *out ? 0 : opt_error_set(OPT_EIO, "out of memory");
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw);

static void remote_close(struct remote *r)
{
	json_decref(r->skipped);
	if (r->view[0])
		nftw(r->view, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	git_remote_free(r->conn);
	git_repository_free(r->peer_repo);
	opt_store_free(r->peer);
	free(r->url);
	free(r->path);
	memset(r, 0, sizeof(*r));
}

/* A setting for https as git has it: the environment variable env, else
 * the store's (or the user's) git config key, else the environment
 * variable fallback (may be NULL).  *out malloc'd, NULL when unset. */
static int tls_setting(struct opt_sync *y, const char *env, const char *key, const char *fallback, char **out)
{
	git_config *cfg = NULL;
	git_buf buf = { 0 };
	const char *v = getenv(env);
	int rc = 0;

	*out = NULL;
	if (v && *v)
		goto copy;
	if ((rc = config_of(y, &cfg)) < 0)
		return rc;
	if (git_config_get_string_buf(&buf, cfg, key) == 0 && buf.size) {
		*out = strdup(buf.ptr);
		rc = *out ? 0 : opt_error_set(OPT_EIO, "out of memory");
		git_buf_dispose(&buf);
		git_config_free(cfg);
		return rc;
	}
	git_error_clear();
	git_config_free(cfg);
	v = fallback ? getenv(fallback) : NULL;
	if (!v || !*v)
		return 0;
copy:
	*out = strdup(v);
	return *out ? 0 : opt_error_set(OPT_EIO, "out of memory");
}

/* The certificates an https peer is checked against: $GIT_SSL_CAINFO,
 * http.sslCAInfo or $SSL_CERT_FILE (a PEM file), $GIT_SSL_CAPATH,
 * http.sslCAPath or $SSL_CERT_DIR (a directory), else the system's
 * bundle.  $GIT_SSL_NO_VERIFY or http.sslVerify=false accept any
 * certificate, as git does. */
static int tls_setup(struct opt_sync *y, struct remote *r)
{
	git_config *cfg = NULL;
	char *file = NULL, *dir = NULL;
	int verify = 1, rc;

	if ((rc = tls_setting(y, "GIT_SSL_CAINFO", "http.sslCAInfo", "SSL_CERT_FILE", &file)) < 0 ||
	    (rc = tls_setting(y, "GIT_SSL_CAPATH", "http.sslCAPath", "SSL_CERT_DIR", &dir)) < 0)
		goto done;
	if (getenv("GIT_SSL_NO_VERIFY") && *getenv("GIT_SSL_NO_VERIFY")) {
		verify = 0;
	} else if ((rc = config_of(y, &cfg)) < 0) {
		goto done;
	} else if (git_config_get_bool(&verify, cfg, "http.sslVerify") < 0) {
		git_error_clear();
		verify = 1;
	}
	r->no_verify = !verify;
	if (file || dir) {
		if (git_libgit2_opts(GIT_OPT_SET_SSL_CERT_LOCATIONS, file, dir) < 0)
			rc = opt_git_fail(OPT_EINVAL, "cannot load the certificates of http.sslCAInfo/http.sslCAPath "
				     "($GIT_SSL_CAINFO/$GIT_SSL_CAPATH)");
	} else if (access("/etc/ssl/certs/ca-certificates.crt", R_OK) == 0) {
		git_libgit2_opts(GIT_OPT_SET_SSL_CERT_LOCATIONS, "/etc/ssl/certs/ca-certificates.crt", NULL);
	} else {
		git_libgit2_opts(GIT_OPT_SET_SSL_CERT_LOCATIONS, NULL, "/etc/ssl/certs");
	}
done:
	git_config_free(cfg);
	free(file);
	free(dir);
	return rc;
}

/* A store on this machine that another user owns is refused as our own
 * store (libgit2's owner check, as git does: see opt_store_open), but
 * read as a peer: a clone or fetch only reads it (git's upload-pack does
 * the same), libgit2 runs nothing from its config, and a push needs the
 * file permissions anyway.  Turns the check off (0) or back (1). */
static void peer_owner_check(int on)
{
	git_libgit2_opts(GIT_OPT_SET_OWNER_VALIDATION, on);
}

static int remote_open(struct opt_sync *y, struct remote *r, const char *name, const struct opt_sync_opts *o)
{
	int rc;

	memset(r, 0, sizeof(*r));
	r->o = o;
	snprintf(r->name, sizeof(r->name), "%s", name);
	if (y->url && !(r->url = strdup(y->url)))
		return opt_error_set(OPT_EIO, "out of memory");
	if (!y->url && (rc = remote_url(y, name, &r->url)) < 0)
		return rc;
	if (opt_sync_url_is_local(r->url, &r->path)) {
		peer_owner_check(0);
		rc = opt_store_open(&r->peer, r->path);
		if (rc == 0 && git_repository_open_ext(&r->peer_repo, r->path,
						       GIT_REPOSITORY_OPEN_NO_SEARCH | GIT_REPOSITORY_OPEN_BARE, NULL) < 0) {
			rc = opt_git_fail(OPT_ENET, "cannot open remote");
			peer_owner_check(1);
			remote_close(r);
			return rc;
		}
		peer_owner_check(1);
		if (rc < 0) {
			char msg[512];
			snprintf(msg, sizeof(msg), "%s", opt_error_last());
			remote_close(r);
			return opt_error_set(OPT_ENET, "cannot reach remote '%s': %s", name, msg);
		}
	} else if (strncmp(r->url, "https://", 8) == 0) {
		/* the CA bundle is loaded only when an https peer needs it */
		if ((rc = tls_setup(y, r)) < 0) {
			remote_close(r);
			return rc;
		}
	}
	return 0;
}

/* ---- transport ---- */

/* A failure of the transport: the peer or the network (exit 5), unless
 * what came is corrupt, or (a peer on this machine, whose objects libgit2
 * reads itself) an object there is missing or damaged (exit 4), or our
 * disk is full (exit 7). */
static int net_fail(struct remote *r, const char *what)
{
	const git_error *e = git_error_last();
	int code = OPT_ENET;

	if (e && (e->klass == GIT_ERROR_INDEXER || e->klass == GIT_ERROR_ZLIB || e->klass == GIT_ERROR_OBJECT))
		code = OPT_EINTEGRITY;
	else if (e && r->path && e->klass == GIT_ERROR_ODB)
		code = OPT_EINTEGRITY;
	else if (e && e->klass == GIT_ERROR_OS && e->message &&
		 (strstr(e->message, strerror(ENOSPC)) || strstr(e->message, strerror(EDQUOT)) ||
		  strstr(e->message, strerror(EFBIG))))
		code = OPT_EIO;
	return opt_error_set(code, "remote '%s' (%s): %s: %s", r->name, r->url, what,
			     e && e->message ? e->message : "unknown error");
}

static int cred_cb(git_credential **out, const char *url, const char *user_from_url, unsigned int allowed,
		   void *payload)
{
	struct remote *r = payload;
	const char *user = user_from_url;
	const char *home = getenv("HOME");
	char priv[PATH_MAX], pub[PATH_MAX];
	int step;

	(void)url;
	if (!user || !*user)
		user = getenv("USER") ? getenv("USER") : getenv("LOGNAME");
	if (!user)
		user = "git";
	if (allowed & GIT_CREDENTIAL_USERNAME)
		return git_credential_username_new(out, user);
	if (!(allowed & GIT_CREDENTIAL_SSH_KEY)) {
		git_error_set_str(GIT_ERROR_NET, "the peer asks for a password; opt-sync authenticates with ssh keys only");
		return GIT_EUSER;
	}
	/* libgit2 asks again after each failure: try each way once */
	for (;;) {
		step = r->cred_tries++;
		if (step == 0) {
			const char *k = getenv("OPT_SSH_KEY");
			if (!k || !*k)
				continue;
			snprintf(pub, sizeof(pub), "%s.pub", k);
			return git_credential_ssh_key_new(out, user, access(pub, R_OK) == 0 ? pub : NULL, k, NULL);
		}
		if (step == 1) {
			if (!getenv("SSH_AUTH_SOCK"))
				continue;
			return git_credential_ssh_key_from_agent(out, user);
		}
		if (step == 2 || step == 3) {
			const char *f = step == 2 ? "id_ed25519" : "id_ecdsa";
			if (!home)
				continue;
			snprintf(priv, sizeof(priv), "%s/.ssh/%s", home, f);
			snprintf(pub, sizeof(pub), "%s/.ssh/%s.pub", home, f);
			if (access(priv, R_OK) < 0)
				continue;
			return git_credential_ssh_key_new(out, user, access(pub, R_OK) == 0 ? pub : NULL, priv, NULL);
		}
		git_error_set_str(GIT_ERROR_NET, "ssh authentication failed (tried $OPT_SSH_KEY, the ssh agent, "
				  "~/.ssh/id_ed25519 and ~/.ssh/id_ecdsa)");
		return GIT_EUSER;
	}
}

static int xfer_cb(const git_indexer_progress *st, void *payload)
{
	struct remote *r = payload;

	if (st->total_objects)
		progress(r->o, st->received_objects < st->total_objects ? "receiving objects" : "indexing objects",
			 st->received_objects < st->total_objects ? st->received_objects : st->indexed_objects,
			 st->total_objects);
	return 0;
}

/* An https certificate libgit2 found invalid passes only when the user
 * turned verification off. */
static int cert_cb(git_cert *cert, int valid, const char *host, void *payload)
{
	struct remote *r = payload;

	(void)cert;
	(void)host;
	return !valid && r->no_verify ? 0 : GIT_PASSTHROUGH;
}

static void callbacks(git_remote_callbacks *cb, struct remote *r)
{
	git_remote_init_callbacks(cb, GIT_REMOTE_CALLBACKS_VERSION);
	cb->credentials = cred_cb;
	cb->certificate_check = cert_cb;
	cb->transfer_progress = xfer_cb;
	cb->payload = r;
}

/* ---- the names of the remote's collections ---- */

/* Skip the remote's collection name (as the remote has it, maybe no
 * valid name at all): code, and the last error message, say why. */
static int skip_add(struct remote *r, const char *name, int code)
{
	char esc[4 * OPT_NAME_MAX + 8];
	json_t *v;

	if (!r->skipped && !(r->skipped = json_object()))
		return opt_error_set(OPT_EIO, "out of memory");
	snprintf(esc, sizeof(esc), "%s", opt_esc(name));
	v = json_pack("{s:i,s:s}", "code", code, "error", opt_error_last());
	if (!v || json_object_set_new(r->skipped, esc, v) < 0)
		return opt_error_set(OPT_EIO, "out of memory");
	opt_error_clear();
	return 0;
}

/* Forget the skipped collections that were not asked for (colls, want). */
static void skip_keep_wanted(struct remote *r, const char *const *colls, size_t n, const struct opt_sync_opts *o)
{
	const char *name;
	json_t *v;
	void *tmp;

	json_object_foreach_safe(r->skipped, tmp, name, v) {
		if (!opt_name_wanted(name, colls, n) || (o && o->want && !o->want(name, o->want_arg)))
			json_object_del(r->skipped, name);
	}
}

static int cmp_json_str(const void *a, const void *b)
{
	return strcmp(json_string_value(*(json_t *const *)a), json_string_value(*(json_t *const *)b));
}

/* Sort the array of strings arr. */
static int sort_strings(json_t *arr)
{
	size_t n = json_array_size(arr), i;
	json_t **v = malloc((n ? n : 1) * sizeof(*v));

	if (!v)
		return opt_error_set(OPT_EIO, "out of memory");
	for (i = 0; i < n; i++)
		v[i] = json_incref(json_array_get(arr, i));
	qsort(v, n, sizeof(*v), cmp_json_str);
	json_array_clear(arr);
	for (i = 0; i < n; i++)
		json_array_append_new(arr, v[i]);
	free(v);
	return 0;
}

/* s compared with the first len characters of key. */
static int cmp_prefix(const char *s, const char *key, size_t len)
{
	int c = strncmp(s, key, len);

	return c ? c : s[len] != '\0';
}

/* The index of the first of names (sorted strings) that is not before
 * the first len characters of key. */
static size_t lower_bound(const json_t *names, const char *key, size_t len)
{
	size_t lo = 0, hi = json_array_size(names);

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (cmp_prefix(json_string_value(json_array_get(names, mid)), key, len) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The one of names (sorted) whose name clashes with name (see
 * opt_store_name_clash): one that is name up to a '/', or (with below)
 * one that begins with name and '/'; NULL when none does. */
static const char *clash_in(const json_t *names, const char *name, int below)
{
	size_t n = json_array_size(names), len = strlen(name), k, i;
	char key[OPT_NAME_MAX + 2];

	for (k = 0; k < len; k++)
		if (name[k] == '/' && (i = lower_bound(names, name, k)) < n &&
		    cmp_prefix(json_string_value(json_array_get(names, i)), name, k) == 0)
			return json_string_value(json_array_get(names, i));
	if (!below || len > OPT_NAME_MAX)
		return NULL;
	snprintf(key, sizeof(key), "%s/", name);
	i = lower_bound(names, key, len + 1);
	if (i < n && strncmp(json_string_value(json_array_get(names, i)), key, len + 1) == 0)
		return json_string_value(json_array_get(names, i));
	return NULL;
}

/* Report the collections of r that were skipped, a record each:
 * {"remote", "collection", "status": "skipped", "error"}.  Then rc, or
 * when rc is 0 the status of what was skipped (OPT_EINTEGRITY when some
 * name was not valid, else OPT_ECONFLICT: names that clash with ours),
 * with a message naming the first and counting the others. */
static int skip_report(struct remote *r, const struct opt_sync_opts *o, int rc)
{
	json_t *names = json_array(), *v;
	const char *name;
	size_t n = json_object_size(r->skipped), i;
	int code = OPT_ECONFLICT, erc = 0;
	char msg[1024];

	if (!names)
		return rc < 0 ? rc : opt_error_set(OPT_EIO, "out of memory");
	if (n == 0) {
		json_decref(names);
		return rc;
	}
	snprintf(msg, sizeof(msg), "%s", opt_error_last());
	json_object_foreach(r->skipped, name, v)
		json_array_append_new(names, json_string(name));
	if (sort_strings(names) < 0) {
		json_decref(names);
		return rc < 0 ? opt_error_set(rc, "%s", msg) : OPT_EIO;
	}
	for (i = 0; i < n; i++) {
		json_t *rec;
		name = json_string_value(json_array_get(names, i));
		v = json_object_get(r->skipped, name);
		if (json_integer_value(json_object_get(v, "code")) == OPT_EINTEGRITY)
			code = OPT_EINTEGRITY;
		rec = json_pack("{s:s,s:s,s:s,s:O}", "remote", r->name, "collection", name, "status", "skipped", "error",
				json_object_get(v, "error"));
		if (rec && o && o->dry_run)
			json_object_set_new(rec, "dry_run", json_true());
		if (!erc)
			erc = opt_sync_emit_rec(o, rec);
		else
			json_decref(rec);
	}
	name = json_string_value(json_array_get(names, 0));
	v = json_object_get(r->skipped, name);
	if (rc < 0)
		opt_error_set(rc, "%s", msg);
	else if (erc)
		rc = erc;
	else if (n == 1)
		rc = opt_error_set(code, "remote '%s': collection '%s' skipped: %s", r->name, name,
				   json_string_value(json_object_get(v, "error")));
	else
		rc = opt_error_set(code, "remote '%s': %zu collections skipped, first '%s': %s", r->name, n, name,
				   json_string_value(json_object_get(v, "error")));
	json_decref(names);
	return rc;
}

/* Views of path remotes older than a day, left by a process that was
 * killed, go. */
static void view_sweep(const char *store)
{
	DIR *d = opendir(store);
	struct dirent *e;
	struct stat st;
	char path[PATH_MAX];
	time_t now = time(NULL);

	while (d && (e = readdir(d))) {
		if (strncmp(e->d_name, "opt-peer.", 9) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", store, e->d_name);
		if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode) && now - st.st_mtime > 86400)
			nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	}
	if (d)
		closedir(d);
}

/* libgit2's local transport lists every ref of the repository and fails
 * on the first whose name git does not accept (a file
 * refs/opt/collections/x~1 put there by hand): one such ref failed every
 * fetch from that remote.  A path remote with such refs is read through
 * a view: a bare repository in our store (opt-peer.XXXXXX, removed when
 * the remote is closed; one left by a killed run goes a day later) whose
 * objects are the remote's (alternates) and whose refs are the remote's
 * collection refs that git accepts.  The collection refs left out are
 * skipped. */
static int path_view(struct opt_sync *y, struct remote *r)
{
	git_reference_iterator *it = NULL;
	git_repository *view = NULL;
	git_repository_init_options io;
	json_t *names = json_array();
	const char *name;
	char *store = NULL, *peer = NULL, alt[PATH_MAX + 64];
	size_t pl = strlen(REF_COLL), i;
	int odd = 0, valid, err, rc = 0;
	FILE *f;

	if (!names)
		return opt_error_set(OPT_EIO, "out of memory");
	if (git_reference_iterator_new(&it, r->peer_repo) < 0) {
		json_decref(names);
		return net_fail(r, "cannot list refs");
	}
	while ((err = git_reference_next_name(&name, it)) == 0) {
		if (git_reference_name_is_valid(&valid, name) < 0)
			valid = 0;
		if (valid) {
			if (strncmp(name, REF_COLL, pl) == 0)
				json_array_append_new(names, json_string_nocheck(name));
			continue;
		}
		odd = 1;
		if (strncmp(name, REF_COLL, pl) != 0)
			continue;
		if (opt_store_name_check(name + pl) == 0)
			opt_error_set(OPT_EINTEGRITY, "not a valid ref name");
		if ((rc = skip_add(r, name + pl, OPT_EINTEGRITY)) < 0)
			break;
	}
	git_reference_iterator_free(it);
	if (rc == 0 && err != GIT_ITEROVER)
		rc = net_fail(r, "cannot list refs");
	if (rc < 0 || !odd)
		goto done;
	git_error_clear();
	if (!(store = realpath(opt_store_path(y->s), NULL)) || !(peer = realpath(git_repository_path(r->peer_repo), NULL))) {
		rc = opt_error_set(OPT_EIO, "cannot resolve the store or the remote's path: %s", strerror(errno));
		goto done;
	}
	view_sweep(store);
	snprintf(r->view, sizeof(r->view), "%s/opt-peer.XXXXXX", store);
	if (!mkdtemp(r->view)) {
		rc = opt_error_set(OPT_EIO, "cannot make '%s': %s", r->view, strerror(errno));
		r->view[0] = '\0';
		goto done;
	}
	git_repository_init_options_init(&io, GIT_REPOSITORY_INIT_OPTIONS_VERSION);
	io.flags = GIT_REPOSITORY_INIT_BARE;
	if (git_repository_init_ext(&view, r->view, &io) < 0) {
		rc = opt_git_fail(OPT_EIO, "cannot make a view of the remote");
		goto done;
	}
	snprintf(alt, sizeof(alt), "%s/objects/info/alternates", r->view);
	if (!(f = fopen(alt, "w")) || fprintf(f, "%s/objects\n", peer) < 0 || fclose(f) != 0) {
		rc = opt_error_set(OPT_EIO, "cannot write '%s': %s", alt, strerror(errno));
		goto done;
	}
	for (i = 0; i < json_array_size(names); i++) {
		git_reference *ref = NULL;
		git_oid id;
		name = json_string_value(json_array_get(names, i));
		if (git_reference_name_to_id(&id, r->peer_repo, name) < 0) {
			git_error_clear();
			continue;
		}
		if (git_reference_create(&ref, view, name, &id, 1, "opt-sync view") < 0) {
			rc = opt_git_fail(OPT_EIO, "cannot make a view of the remote");
			goto done;
		}
		git_reference_free(ref);
	}
done:
	git_repository_free(view);
	json_decref(names);
	free(store);
	free(peer);
	return rc;
}

/* Connect and list the remote's collections (name -> head) into h; the
 * ones we cannot take (not a valid collection name, a name that clashes
 * with one of ours) go to r->skipped instead. */
static int ls_remote(struct opt_sync *y, struct remote *r, git_remote **gr_out, struct heads *h)
{
	git_remote_callbacks cb;
	git_remote *gr = NULL;
	const git_remote_head **refs = NULL;
	json_t *ours = NULL, *theirs = NULL;
	const char *other;
	size_t n = 0, i, k, pl = strlen(REF_COLL);
	int rc;

	*gr_out = NULL;
	if (r->path && !r->view[0] && (rc = path_view(y, r)) < 0)
		return rc;
	callbacks(&cb, r);
	if (anon_remote(&gr, y->repo, r->view[0] ? r->view : r->path ? r->path : r->url) < 0)
		return net_fail(r, "invalid URL");
	r->cred_tries = 0;
	/* the local transport opens the peer's repository here */
	if (r->path)
		peer_owner_check(0);
	rc = git_remote_connect(gr, GIT_DIRECTION_FETCH, &cb, NULL, NULL);
	if (r->path)
		peer_owner_check(1);
	if (rc < 0) {
		rc = net_fail(r, "cannot connect");
		git_remote_free(gr);
		return rc;
	}
	if (git_remote_ls(&refs, &n, gr) < 0) {
		rc = net_fail(r, "cannot list refs");
		git_remote_free(gr);
		return rc;
	}
	if ((rc = opt_store_list(y->s, &ours)) < 0 || !(theirs = json_array()))
		goto fail;
	for (i = 0; i < n; i++) {
		struct head *e;
		const char *name = refs[i]->name;
		if (strncmp(name, REF_COLL, pl) != 0)
			continue;
		name += pl;
		if (opt_store_name_check(name) < 0) {
			if ((rc = skip_add(r, name, OPT_EINTEGRITY)) < 0)
				goto fail;
			continue;
		}
		if ((other = clash_in(ours, name, 1))) {
			opt_error_set(OPT_ECONFLICT, "collection '%s' cannot be created: collection '%s' exists", name, other);
			if ((rc = skip_add(r, name, OPT_ECONFLICT)) < 0)
				goto fail;
			continue;
		}
		if (!(e = heads_add(h, name)) || json_array_append_new(theirs, json_string(name)) < 0) {
			rc = opt_error_set(OPT_EIO, "out of memory");
			goto fail;
		}
		e->new = refs[i]->oid;
		e->has_new = 1;
	}
	/* two of the remote's that clash (git cannot hold both): the first */
	if ((rc = sort_strings(theirs)) < 0)
		goto fail;
	for (i = k = 0; i < h->n; i++) {
		if ((other = clash_in(theirs, h->v[i].name, 0))) {
			opt_error_set(OPT_EINTEGRITY, "remote '%s' lists both '%s' and '%s', which cannot both exist", r->name,
				      other, h->v[i].name);
			rc = skip_add(r, h->v[i].name, OPT_EINTEGRITY);
			free(h->v[i].name);
			if (rc < 0) {
				for (i++; i < h->n; i++)
					h->v[k++] = h->v[i];
				h->n = k;
				goto fail;
			}
			continue;
		}
		h->v[k++] = h->v[i];
	}
	h->n = k;
	json_decref(ours);
	json_decref(theirs);
	*gr_out = gr;
	return 0;
fail:
	json_decref(ours);
	json_decref(theirs);
	git_remote_free(gr);
	return rc;
}

struct vprog {
	const struct opt_sync_opts *o;
	char what[OPT_NAME_MAX + 32];
};

static void verify_progress(long done, long total, void *arg)
{
	struct vprog *p = arg;

	progress(p->o, p->what, (size_t)done, (size_t)total);
}

/* Copy file from to to (through a temporary name, synced when fsync is
 * on).  0, or -1 with errno. */
static int copy_file(const char *from, const char *to)
{
	char tmp[PATH_MAX], buf[1 << 16];
	ssize_t n = 0;
	int in, out, rc = -1;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", to) >= (int)sizeof(tmp))
		return -1;
	if ((in = open(from, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC)) < 0)
		return -1;
	{
		/* only a regular file (a FIFO would never end) */
		struct stat st;
		if (fstat(in, &st) < 0 || !S_ISREG(st.st_mode)) {
			close(in);
			errno = EINVAL;
			return -1;
		}
	}
	if ((out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0444)) < 0) {
		close(in);
		return -1;
	}
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, (size_t)n) != n)
			break;
	if (n == 0 && (!opt_pack_fsync_enabled() || fsync(out) == 0))
		rc = 0;
	close(in);
	if (close(out) < 0)
		rc = -1;
	if (rc == 0)
		rc = rename(tmp, to);
	if (rc < 0)
		unlink(tmp);
	return rc;
}

static int has_string(const json_t *a, const char *v);

/* ---- sizes of what a peer sends ---- */

/* A set of object IDs (open addressing). */
struct oidset {
	git_oid *v;
	unsigned char *used;
	size_t n, cap;
};

static void oidset_clear(struct oidset *o)
{
	free(o->v);
	free(o->used);
	memset(o, 0, sizeof(*o));
}

/* Add id: 1 if new, 0 if there already, <0 out of memory. */
static int oidset_add(struct oidset *o, const git_oid *id)
{
	size_t i;

	if (2 * (o->n + 1) > o->cap) {
		struct oidset g = { NULL, NULL, 0, o->cap ? 2 * o->cap : 1024 };
		if (!(g.v = malloc(g.cap * sizeof(*g.v))) || !(g.used = calloc(g.cap, 1))) {
			oidset_clear(&g);
			return opt_error_set(OPT_EIO, "out of memory");
		}
		for (i = 0; i < o->cap; i++)
			if (o->used[i])
				oidset_add(&g, &o->v[i]);
		oidset_clear(o);
		*o = g;
	}
	i = ((size_t)id->id[0] << 24 | (size_t)id->id[1] << 16 | (size_t)id->id[2] << 8 | id->id[3]) & (o->cap - 1);
	for (; o->used[i]; i = (i + 1) & (o->cap - 1))
		if (git_oid_equal(&o->v[i], id))
			return 0;
	o->used[i] = 1;
	o->v[i] = *id;
	o->n++;
	return 1;
}

struct sizewalk {
	struct opt_sync *y;
	struct remote *r;
	git_odb *podb;       /* the peer's */
	const struct head *e; /* the collection walked */
	struct oidset seen;
};

/* Object id at the peer: 1 when it is new to us (its size then checked:
 * at most OPT_BLOCK_MAX, and of type want unless GIT_OBJECT_ANY), 0 when
 * we have it or saw it already, <0 refused. */
static int size_ok(struct sizewalk *w, const git_oid *id, git_object_t want)
{
	size_t size;
	git_object_t type;
	char hex[GIT_OID_HEXSZ + 1];
	int rc;

	if ((rc = oidset_add(&w->seen, id)) <= 0)
		return rc;
	if (have_object(w->y, id))
		return 0;
	hex_of(hex, id);
	if (git_odb_read_header(&size, &type, w->podb, id) < 0) {
		const git_error *e = git_error_last();
		return opt_error_set(OPT_EINTEGRITY, "remote '%s': collection '%s': cannot read object %s: %s (refused)",
				     w->r->name, w->e->name, hex, e && e->message ? e->message : "unknown libgit2 error");
	}
	if (want != GIT_OBJECT_ANY && type != want)
		return opt_error_set(OPT_EINTEGRITY, "remote '%s': collection '%s': %s %s is a %s, not a %s (refused)",
				     w->r->name, w->e->name, git_oid_equal(id, &w->e->new) ? "its head" : "object", hex,
				     git_object_type2string(type), git_object_type2string(want));
	if (size > OPT_BLOCK_MAX)
		return opt_error_set(OPT_EINTEGRITY, "remote '%s': collection '%s': object %s has %zu bytes, more than "
				     "an object may have (%zu bytes): refused unread", w->r->name, w->e->name, hex, size,
				     OPT_BLOCK_MAX);
	return 1;
}

static int tree_sizes(struct sizewalk *w, const git_oid *id, int depth)
{
	git_tree *t = NULL;
	size_t i, n;
	int rc;

	if ((rc = size_ok(w, id, GIT_OBJECT_TREE)) <= 0)
		return rc;
	if (depth > 16)
		return opt_error_set(OPT_EINTEGRITY, "remote '%s': collection '%s': trees nested too deep (refused)",
				     w->r->name, w->e->name);
	if (git_tree_lookup(&t, w->r->peer_repo, id) < 0)
		return opt_git_fail(OPT_EINTEGRITY, "cannot read a tree of the remote");
	n = git_tree_entrycount(t);
	for (i = 0, rc = 0; i < n && rc >= 0; i++) {
		const git_tree_entry *e = git_tree_entry_byindex(t, i);
		if (git_tree_entry_type(e) == GIT_OBJECT_TREE)
			rc = tree_sizes(w, git_tree_entry_id(e), depth + 1);
		else if (git_tree_entry_type(e) == GIT_OBJECT_BLOB)
			rc = size_ok(w, git_tree_entry_id(e), GIT_OBJECT_BLOB);
	}
	git_tree_free(t);
	return rc < 0 ? rc : 0;
}

/* Before libgit2's local transport reads them whole: every object a
 * fetch from the peer on this machine would bring (the changed heads'
 * commits, trees and blobs that we lack) has at most OPT_BLOCK_MAX bytes,
 * by its header.  0, or OPT_EINTEGRITY naming the object. */
static int peer_sizes(struct opt_sync *y, struct remote *r, const struct heads *h)
{
	struct sizewalk w;
	git_oid *stack = NULL;
	size_t i, n = 0, cap = 0;
	int rc = 0;

	memset(&w, 0, sizeof(w));
	w.y = y;
	w.r = r;
	if (git_repository_odb(&w.podb, r->peer_repo) < 0)
		return opt_git_fail(OPT_ENET, "cannot open the remote's objects");
	for (i = 0; i < h->n && rc >= 0; i++) {
		if (strcmp(h->v[i].status, "unchanged") == 0)
			continue;
		w.e = &h->v[i];
		n = 0;
		if (h->v[i].has_old && (rc = oidset_add(&w.seen, &h->v[i].old)) < 0)
			break;
		/* the commits from the head down to what we have */
		if (n == cap) {
			git_oid *ns = realloc(stack, (cap = cap ? 2 * cap : 64) * sizeof(*ns));
			if (!ns) {
				rc = opt_error_set(OPT_EIO, "out of memory");
				break;
			}
			stack = ns;
		}
		stack[n++] = h->v[i].new;
		while (n > 0 && rc >= 0) {
			git_oid id = stack[--n];
			git_commit *c = NULL;
			unsigned k;
			if ((rc = size_ok(&w, &id, GIT_OBJECT_COMMIT)) <= 0)
				continue;
			if (git_commit_lookup(&c, r->peer_repo, &id) < 0) {
				rc = opt_git_fail(OPT_EINTEGRITY, "cannot read a commit of the remote");
				break;
			}
			rc = tree_sizes(&w, git_commit_tree_id(c), 0);
			for (k = 0; rc >= 0 && k < git_commit_parentcount(c); k++) {
				if (n == cap) {
					git_oid *ns = realloc(stack, (cap = 2 * cap) * sizeof(*ns));
					if (!ns) {
						rc = opt_error_set(OPT_EIO, "out of memory");
						break;
					}
					stack = ns;
				}
				stack[n++] = *git_commit_parent_id(c, k);
			}
			git_commit_free(c);
		}
	}
	free(stack);
	oidset_clear(&w.seen);
	git_odb_free(w.podb);
	return rc < 0 ? rc : 0;
}

/* The names of the store's pack indexes: *out an array of strings. */
static int pack_names(struct opt_sync *y, json_t **out)
{
	char dir[PATH_MAX];
	struct dirent *de;
	DIR *d;
	size_t len;

	if (!(*out = json_array()))
		return opt_error_set(OPT_EIO, "out of memory");
	snprintf(dir, sizeof(dir), "%s/objects/pack", git_repository_path(y->repo));
	if (!(d = opendir(dir)))
		return 0;
	while ((de = readdir(d)))
		if ((len = strlen(de->d_name)) > 4 && strcmp(de->d_name + len - 4, ".idx") == 0)
			json_array_append_new(*out, json_string(de->d_name));
	closedir(d);
	return 0;
}

/* Each pack that a download added (not in before): no object larger than
 * a block (opt_pack_sizes_check).  0, or OPT_EINTEGRITY. */
static int new_packs_sizes(struct opt_sync *y, struct remote *r, const json_t *before)
{
	json_t *now = NULL;
	char idx[PATH_MAX + 300], pack[PATH_MAX + 300];
	size_t i, len;
	int rc;

	if ((rc = pack_names(y, &now)) < 0)
		return rc;
	for (i = 0; i < json_array_size(now) && rc == 0; i++) {
		const char *name = json_string_value(json_array_get(now, i));
		if (has_string(before, name))
			continue;
		len = strlen(name);
		snprintf(idx, sizeof(idx), "%s/objects/pack/%s", git_repository_path(y->repo), name);
		snprintf(pack, sizeof(pack), "%s/objects/pack/%.*s.pack", git_repository_path(y->repo), (int)(len - 4), name);
		if ((rc = opt_pack_sizes_check(idx, pack)) < 0)
			rc = opt_error_wrap(rc, "remote '%s': refused", r->name);
	}
	json_decref(now);
	return rc;
}

/* Index the pack at path where it lies (libgit2's indexer: every object
 * inflated and hashed, a new index written): 0, or -1; OPT_EINTEGRITY
 * when an object of it is larger than a block may be (the pack is then
 * not kept). */
static int index_pack(struct opt_sync *y, const char *path)
{
	char dir[PATH_MAX + 320], buf[1 << 16];
	git_indexer *ix = NULL;
	git_indexer_options io;
	git_indexer_progress st;
	git_odb *odb = NULL;
	ssize_t n = 0;
	int fd, rc = -1;

	/* indexed where it lies (the quarantine's pack directory) */
	snprintf(dir, sizeof(dir), "%s", path);
	if (strrchr(dir, '/'))
		*strrchr(dir, '/') = '\0';
	git_indexer_options_init(&io, GIT_INDEXER_OPTIONS_VERSION);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return -1;
	if (git_repository_odb(&odb, y->repo) == 0 && git_indexer_new(&ix, dir, 0, odb, &io) == 0) {
		while ((n = read(fd, buf, sizeof(buf))) > 0)
			if (git_indexer_append(ix, buf, (size_t)n, &st) < 0)
				break;
		if (n == 0 && git_indexer_commit(ix, &st) == 0) {
			char idx[PATH_MAX + 400], pack[PATH_MAX + 400];
			snprintf(idx, sizeof(idx), "%s/pack-%s.idx", dir, git_indexer_name(ix));
			snprintf(pack, sizeof(pack), "%s/pack-%s.pack", dir, git_indexer_name(ix));
			if ((rc = opt_pack_sizes_check(idx, pack)) < 0) {
				unlink(idx);
				unlink(pack);
			}
		}
	}
	git_indexer_free(ix);
	git_odb_free(odb);
	close(fd);
	git_error_clear();
	return rc < -1 ? rc : rc < 0 ? -1 : 0;
}

/* Copy the peer's pack from (and its index beside it) to to: the index
 * checked against the pack first (opt_pack_idx_check: a damaged index
 * copied as it is would serve wrong objects, and git fsck fails on it),
 * both copies checked so that what is checked is what stays; a pack whose
 * index fails the check is indexed here instead.  0; -1 (the fetch then
 * goes the usual way); OPT_EINTEGRITY for an object larger than a block
 * may be (refused: the usual way would read it whole). */
static int seed_pack(struct opt_sync *y, const char *from, const char *to)
{
	char fidx[PATH_MAX + 300], tidx[PATH_MAX + 300], tpack[PATH_MAX + 310], tmpidx[PATH_MAX + 310];
	int rc = -1;

	snprintf(fidx, sizeof(fidx), "%.*s.idx", (int)(strlen(from) - 5), from);
	snprintf(tidx, sizeof(tidx), "%.*s.idx", (int)(strlen(to) - 5), to);
	/* (copy_file puts them in place through NAME.tmp) */
	snprintf(tpack, sizeof(tpack), "%s.seed", to);
	snprintf(tmpidx, sizeof(tmpidx), "%s.seed", tidx);
	if (copy_file(from, tpack) < 0)
		goto done;
	if (copy_file(fidx, tmpidx) == 0 && opt_pack_idx_check(tmpidx, tpack) == 0) {
		/* no object larger than a block, none inflated to find out */
		if ((rc = opt_pack_sizes_check(tmpidx, tpack)) < 0)
			goto done;
		rc = rename(tpack, to) == 0 && rename(tmpidx, tidx) == 0 ? 0 : -1;
		goto done;
	}
	opt_error_clear();
	rc = index_pack(y, tpack);
done:
	unlink(tpack);
	unlink(tmpidx);
	return rc;
}

/* A first fetch from a store on this machine into a store without packs
 * (a clone): the peer's pack files are copied as they are, where
 * libgit2's local transport would build a new pack object by object
 * (delta search, recompression): 1 when every wanted head is then here
 * and its incoming ref written, 0 to fetch the usual way. */
static int seed_from_path(struct opt_sync *y, struct remote *r, struct heads *h, const char *inc_prefix)
{
	char ours[PATH_MAX], theirs[PATH_MAX], qpack[PATH_MAX], from[PATH_MAX + 300], to[PATH_MAX + 300], ref[REFLEN];
	struct dirent *de;
	DIR *d;
	git_odb *odb = NULL;
	size_t i, len;
	int any = 0, ok = 1, rc;

	snprintf(ours, sizeof(ours), "%s/objects/pack", git_repository_path(y->repo));
	snprintf(theirs, sizeof(theirs), "%s/objects/pack", git_repository_path(r->peer_repo));
	if (!(d = opendir(ours)))
		return 0;
	/* (copied into the quarantine, as a fetch would be) */
	snprintf(qpack, sizeof(qpack), "%s/pack", opt_store_quarantine_dir(y->s));
	while ((de = readdir(d)))
		if ((len = strlen(de->d_name)) > 5 && strcmp(de->d_name + len - 5, ".pack") == 0)
			any = 1;
	closedir(d);
	if (any || !(d = opendir(theirs)))
		return 0;
	/* each pack, then its index (which makes it visible) */
	while (ok && (de = readdir(d))) {
		if ((len = strlen(de->d_name)) <= 5 || strcmp(de->d_name + len - 5, ".pack") != 0)
			continue;
		snprintf(from, sizeof(from), "%s/%s", theirs, de->d_name);
		snprintf(to, sizeof(to), "%s/%s", qpack, de->d_name);
		if ((rc = seed_pack(y, from, to)) < -1) {
			closedir(d);
			return opt_error_wrap(rc, "remote '%s': refused", r->name);
		}
		ok = rc == 0;
	}
	closedir(d);
	if (git_repository_odb(&odb, y->repo) == 0)
		git_odb_refresh(odb);
	git_odb_free(odb);
	for (i = 0; ok && i < h->n; i++)
		if (strcmp(h->v[i].status, "unchanged") != 0 && !have_object(y, &h->v[i].new))
			ok = 0;
	for (i = 0; ok && i < h->n; i++) {
		git_reference *gref = NULL;
		if (strcmp(h->v[i].status, "unchanged") == 0)
			continue;
		snprintf(ref, sizeof(ref), "%s%s", inc_prefix, h->v[i].name);
		if (git_reference_create(&gref, y->repo, ref, &h->v[i].new, 1, "opt-sync fetch") < 0)
			return opt_git_fail(OPT_EIO, "cannot write incoming refs");
		git_reference_free(gref);
	}
	git_error_clear();
	return ok;
}

/* Open the store's quarantine of incoming objects (begin), or close it,
 * keeping what it holds or not: for the store's handle and ours. */
static int quarantine(struct opt_sync *y, int begin, int keep)
{
	int rc;

	if (begin) {
		if ((rc = opt_store_quarantine_begin(y->s)) < 0)
			return rc;
		if ((rc = opt_git_repo_reopen_odb(y->repo, opt_store_quarantine_dir(y->s))) < 0)
			opt_store_quarantine_end(y->s, 0);
		return rc;
	}
	if (!opt_store_quarantine_dir(y->s))
		return 0;
	rc = opt_store_quarantine_end(y->s, keep);
	if (opt_git_repo_reopen_odb(y->repo, NULL) < 0 && rc == 0)
		rc = OPT_EIO;
	return rc;
}

/* The remote head of e is a commit: 0, else OPT_EINTEGRITY naming the
 * remote and the collection. */
static int head_is_commit(struct opt_sync *y, struct remote *r, const struct head *e)
{
	git_odb *odb = NULL;
	git_object_t type = GIT_OBJECT_INVALID;
	size_t size;
	char hex[GIT_OID_HEXSZ + 1];
	int rc;

	if (git_repository_odb(&odb, y->repo) < 0)
		return opt_git_fail(OPT_EIO, "cannot open the object database");
	rc = git_odb_read_header(&size, &type, odb, &e->new);
	git_odb_free(odb);
	hex_of(hex, &e->new);
	if (rc < 0) {
		char msg[512];
		const git_error *ge = git_error_last();
		snprintf(msg, sizeof(msg), "%s", ge && ge->message ? ge->message : "unknown libgit2 error");
		return opt_error_set(OPT_EINTEGRITY, "remote '%s': collection '%s': cannot read its head %s: %s (refused)",
				     r->name, e->name, hex, msg);
	}
	if (type != GIT_OBJECT_COMMIT)
		return opt_error_set(OPT_EINTEGRITY, "remote '%s': collection '%s': its head %s is a %s, not a commit (refused)",
				     r->name, e->name, hex, git_object_type2string(type));
	return 0;
}

/* Fetch the remote's collections (all, or colls) into the quarantine,
 * verify each changed one, and only then move the tracking refs.  *h gets
 * one head per collection of the remote (sorted by name), with the
 * tracking ref before (old) and the remote head (new).  With dry_run
 * nothing is downloaded or moved. */
static int fetch_verified(struct opt_sync *y, struct remote *r, const char *const *colls, size_t n,
			  int dry_run, struct heads *h)
{
	const struct opt_sync_opts *o = r->o;
	git_remote *gr = NULL;
	git_fetch_options fo;
	git_strarray specs = { 0 };
	char ref[REFLEN], inc_prefix[REFLEN], hex[GIT_OID_HEXSZ + 1];
	int64_t deadline = opt_now_ms() + busy_timeout(o);
	json_t *packs_before = NULL;
	size_t i, k;
	int rc;

	memset(h, 0, sizeof(*h));
	snprintf(inc_prefix, sizeof(inc_prefix), REF_INCOMING "%s/", r->name);
	if ((rc = delete_refs_under(y->repo, inc_prefix)) < 0)
		return rc;
	if ((rc = ls_remote(y, r, &gr, h)) < 0)
		goto done;
	/* keep the wanted ones */
	for (i = k = 0; i < h->n; i++) {
		if (opt_name_wanted(h->v[i].name, colls, n) && (!o || !o->want || o->want(h->v[i].name, o->want_arg)))
			h->v[k++] = h->v[i];
		else
			free(h->v[i].name);
	}
	h->n = k;
	skip_keep_wanted(r, colls, n, o);
	if (h->n > 1)  /* h->v is NULL for a remote with no collections */
		qsort(h->v, h->n, sizeof(*h->v), cmp_head);
	for (i = 0; i < h->n; i++) {
		struct head *e = &h->v[i];
		snprintf(ref, sizeof(ref), REF_REMOTES "%s/%s", r->name, e->name);
		if ((rc = opt_git_ref_get(y->repo, ref, &e->old)) < 0)
			goto done;
		e->has_old = rc;
		e->status = !e->has_old ? "new" : git_oid_equal(&e->old, &e->new) ? "unchanged" : "updated";
	}
	rc = 0;
	if (dry_run)
		goto done;
	/* download what changed, into the quarantine */
	specs.strings = calloc(h->n ? h->n : 1, sizeof(char *));
	if (!specs.strings) {
		rc = opt_error_set(OPT_EIO, "out of memory");
		goto done;
	}
	for (i = 0; i < h->n; i++) {
		struct head *e = &h->v[i];
		if (strcmp(e->status, "unchanged") == 0)
			continue;
		if (asprintf(&specs.strings[specs.count], "+" REF_COLL "%s:%s%s", e->name, inc_prefix, e->name) < 0) {
			specs.strings[specs.count] = NULL;
			rc = opt_error_set(OPT_EIO, "out of memory");
			goto done;
		}
		specs.count++;
	}
	if (specs.count == 0)
		goto done;
	/* what comes is kept apart until it passed */
	if ((rc = quarantine(y, 1, 0)) < 0)
		goto done;
	if (r->path && (rc = seed_from_path(y, r, h, inc_prefix)) != 0) {
		if (rc < 0)
			goto done;
		goto downloaded;
	}
	/* libgit2's local transport reads every object it sends whole:
	 * their sizes first */
	if (r->path && (rc = peer_sizes(y, r, h)) < 0)
		goto done;
	if ((rc = pack_names(y, &packs_before)) < 0)
		goto done;
	git_fetch_options_init(&fo, GIT_FETCH_OPTIONS_VERSION);
	callbacks(&fo.callbacks, r);
	fo.update_fetchhead = 0;
	fo.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_NONE;
	fo.prune = GIT_FETCH_NO_PRUNE;
	if (git_remote_download(gr, &specs, &fo) < 0) {
		rc = net_fail(r, "cannot fetch");
		goto done;
	}
	/* nothing of what came is read before its size is known */
	if ((rc = new_packs_sizes(y, r, packs_before)) < 0)
		goto done;
	if (git_remote_update_tips(gr, &fo.callbacks, 0, GIT_REMOTE_DOWNLOAD_TAGS_NONE, NULL) < 0) {
		rc = opt_git_fail(OPT_EIO, "cannot write incoming refs");
		goto done;
	}
downloaded:
	git_remote_disconnect(gr);
	/* verify every changed collection before any ref moves */
	for (i = 0; i < h->n; i++) {
		struct head *e = &h->v[i];
		struct vprog vp;
		git_oid got;
		if (strcmp(e->status, "unchanged") == 0)
			continue;
		snprintf(ref, sizeof(ref), "%s%s", inc_prefix, e->name);
		if ((rc = opt_git_ref_get(y->repo, ref, &got)) < 0)
			goto done;
		if (rc == 0 || !git_oid_equal(&got, &e->new)) {
			rc = opt_error_set(OPT_ENET, "remote '%s': collection '%s' changed during the fetch; try again",
					   r->name, e->name);
			goto done;
		}
		/* (before libgit2's history walk, which leaks on another
		 * type) */
		if ((rc = head_is_commit(y, r, e)) < 0)
			goto done;
		if (e->has_old) {
			rc = descends(y->repo, &e->new, &e->old);
			if (rc < 0)
				goto done;
			if (rc == 0) {
				rc = opt_error_set(OPT_EINTEGRITY, "remote '%s': collection '%s' was rewound: its revision %ld does not "
						   "descend from revision %ld that we fetched before (refused)", r->name, e->name,
						   rev_of(y, e->name, &e->new), rev_of(y, e->name, &e->old));
				goto done;
			}
		}
		hex_of(hex, &e->new);
		vp.o = o;
		snprintf(vp.what, sizeof(vp.what), "verifying '%s'", e->name);
		/* the old tracking ref was verified when it came: only what is new */
		{
			char base[GIT_OID_HEXSZ + 1];
			hex_of(base, &e->old);
			rc = opt_verify_collection_since(y->s, e->name, hex, e->has_old ? base : NULL,
							 o && o->progress ? verify_progress : NULL, &vp, NULL);
		}
		if (rc < 0) {
			char msg[1024];
			snprintf(msg, sizeof(msg), "%s", opt_error_last());
			if (rc != OPT_EIO)
				rc = OPT_EINTEGRITY;
			rc = opt_error_set(rc, "remote '%s': collection '%s' refused: %s", r->name, e->name, msg);
			goto done;
		}
	}
	/* all verified: the objects into the store, then the tracking refs */
	if ((rc = quarantine(y, 0, 1)) < 0)
		goto done;
	for (i = 0; i < h->n; i++) {
		struct head *e = &h->v[i];
		if (strcmp(e->status, "unchanged") == 0)
			continue;
		snprintf(ref, sizeof(ref), REF_REMOTES "%s/%s", r->name, e->name);
		if ((rc = ref_cas(y->repo, ref, &e->new, e->has_old ? &e->old : NULL, deadline)) < 0)
			goto done;
	}
	rc = 0;
done:
	json_decref(packs_before);
	for (i = 0; i < specs.count; i++)
		free(specs.strings[i]);
	free(specs.strings);
	if (gr) {
		git_remote_disconnect(gr);
		git_remote_free(gr);
	}
	{
		/* the quarantine goes either way */
		char msg[1024];
		int keep = rc;
		snprintf(msg, sizeof(msg), "%s", opt_error_last());
		if (quarantine(y, 0, 0) < 0 && rc == 0)
			return opt_error_last_code() ? opt_error_last_code() : OPT_EIO;
		if (delete_refs_under(y->repo, inc_prefix) < 0 && rc == 0)
			return opt_error_last_code() ? opt_error_last_code() : OPT_EIO;
		if (keep < 0)
			opt_error_set(keep, "%s", msg);
	}
	return rc;
}

/* A named collection the remote lacks. */
static int check_named(struct heads *h, struct remote *r, const char *const *colls, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!heads_find(h, colls[i]) && !json_object_get(r->skipped, colls[i]))
			return opt_error_set(OPT_ENOTFOUND, "remote '%s' has no collection '%s'", r->name, colls[i]);
	return 0;
}

int opt_sync_fetch(struct opt_sync *y, const char *remote, const char *const *colls, size_t n,
		   const struct opt_sync_opts *o)
{
	struct remote r;
	struct heads h;
	size_t i;
	int rc;

	o = o ? o : &no_opts;
	y->partial = 0;
	for (i = 0; i < n; i++)
		if ((rc = opt_store_name_check(colls[i])) < 0)
			return rc;
	if ((rc = remote_open(y, &r, remote, o)) < 0)
		return rc;
	rc = fetch_verified(y, &r, colls, n, o->dry_run, &h);
	if (rc == 0)
		rc = check_named(&h, &r, colls, n);
	for (i = 0; rc == 0 && i < h.n; i++) {
		struct head *e = &h.v[i];
		json_t *rec;
		char hex[GIT_OID_HEXSZ + 1];
		if (o->dry_run) {
			hex_of(hex, &e->new);
			rec = json_pack("{s:s,s:s,s:s,s:s,s:b}", "remote", r.name, "collection", e->name, "commit", hex,
					"status", e->status, "dry_run", 1);
		} else {
			rec = json_pack("{s:s,s:s,s:I}", "remote", r.name, "collection", e->name, "rev",
					(json_int_t)rev_of(y, e->name, &e->new));
			if (rec && e->has_old && strcmp(e->status, "updated") == 0)
				json_object_set_new(rec, "from", json_integer(rev_of(y, e->name, &e->old)));
			if (rec)
				json_object_set_new(rec, "status", json_string(e->status));
		}
		rc = opt_sync_emit_rec(o, rec);
	}
	if (json_object_size(r.skipped)) {
		y->partial = rc == 0;
		rc = skip_report(&r, o, rc);
	}
	heads_clear(&h);
	remote_close(&r);
	return rc;
}

int opt_sync_partial(const struct opt_sync *y)
{
	return y->partial;
}

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
	hex_of(hex, at);
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

/* The decision on trx in the history of collection name from commit at,
 * back to `since` (seconds; a minute of slack): 1, -1 or 0. */
static int decision_at(struct opt_sync *y, const char *name, const git_oid *at, const char *trx, int64_t since,
		       int *d)
{
	struct opt_snap *snap = NULL, *p = NULL;
	char hex[GIT_OID_HEXSZ + 1];
	int rc;

	*d = 0;
	hex_of(hex, at);
	if ((rc = opt_snap_open_commit(&snap, y->s, name, hex)) < 0)
		return rc;
	while (snap) {
		if (strcmp(opt_snap_trx(snap), trx) == 0) {
			const char *st = opt_snap_trailer(snap, "Opt-Status");
			if (!st || strcmp(st, "committed") == 0)
				*d = 1;
			else if (strcmp(st, "aborted") == 0)
				*d = -1;
			if (*d)
				break;
		}
		if (opt_snap_time(snap) < since - 60)
			break;
		rc = opt_snap_parent(&p, snap);
		opt_snap_free(snap);
		snap = p;
		if (rc == OPT_ENOTFOUND) {
			opt_error_clear();
			rc = 0;
			break;
		}
		if (rc < 0)
			return rc;
	}
	opt_snap_free(snap);
	return 0;
}

/* The decision on trx by its primary, looking at the primary's old head
 * when a replay moved it (its backup) and at its head. */
static int decision_of(struct opt_sync *y, const char *primary, const char *trx, int64_t since, int *d)
{
	char ref[REFLEN];
	git_oid b;
	int rc;

	*d = 0;
	if (!opt_store_name_valid(primary))
		return opt_error_set(OPT_EINTEGRITY, "transaction %s names an invalid primary '%s'", trx, primary);
	snprintf(ref, sizeof(ref), REF_BACKUP "%s", opt_esc(primary));
	if ((rc = opt_git_ref_get(y->repo, ref, &b)) < 0)
		return rc;
	if (rc == 1 && (rc = decision_at(y, primary, &b, trx, since, d)) < 0)
		return rc;
	if (*d)
		return 0;
	return opt_store_decision(y->s, primary, trx, since, d);
}

/* The transactions our replay already committed on top of `head` (down to
 * revision `after`): {trx: true} into set. */
static int replayed_trx(struct opt_sync *y, const char *name, const git_oid *head, long after, json_t *set)
{
	struct opt_snap *snap = NULL, *p = NULL;
	char hex[GIT_OID_HEXSZ + 1];
	size_t pl = strlen(REPLAY_PREFIX);
	int rc, d;

	hex_of(hex, head);
	if ((rc = opt_snap_open_commit(&snap, y->s, name, hex)) < 0)
		return rc;
	while (snap && opt_snap_rev(snap) > after) {
		const char *sum = opt_snap_summary(snap);
		if (strncmp(sum, REPLAY_PREFIX, pl) == 0 && opt_id_valid(sum + pl)) {
			if ((rc = opt_snap_decided(snap, &d)) < 0)
				break;
			if (d == 1) {
				const char *st = opt_snap_trailer(snap, "Opt-Status");
				if (!st || strcmp(st, "aborted") != 0)
					json_object_set_new(set, sum + pl, json_true());
			}
		}
		rc = opt_snap_parent(&p, snap);
		opt_snap_free(snap);
		snap = p;
		if (rc == OPT_ENOTFOUND) {
			opt_error_clear();
			rc = 0;
			break;
		}
		if (rc < 0)
			break;
	}
	opt_snap_free(snap);
	return rc;
}

/* ---- planning a replay ---- */

/* One diverged collection. */
struct coll {
	char *name;
	git_oid L, T, B;        /* local head, remote head, backup (our old head) */
	int has_L, has_T;
	long base_rev;          /* revision of the common base (0: none) */
	json_t *ours;           /* [{"trx","actions","collections"?}] to replay */
	json_t *theirs;         /* [actions] since the base */
	long replayed;
};

static void coll_clear(struct coll *c)
{
	free(c->name);
	json_decref(c->ours);
	json_decref(c->theirs);
	memset(c, 0, sizeof(*c));
}

/* The common base of a and b: its revision into *rev (0: none). */
static int base_of(struct opt_sync *y, const char *name, const git_oid *a, const git_oid *b, long *rev)
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
	*rev = rev_of(y, name, &mb);
	return 0;
}

static int is_tree_or_diary_action(const char *t)
{
	return strcmp(t, "put") == 0 || strcmp(t, "del") == 0 || strcmp(t, "append") == 0;
}

/* Our transactions to replay: the entries of c->name at `from` after the
 * base, as committed (aborted and reverted ones left out), minus the ones
 * in done.  report: keep every action (for --conflict=fail), refuse
 * nothing. */
static int plan_ours(struct opt_sync *y, struct coll *c, const git_oid *from, json_t *done, int report)
{
	json_t *entries = NULL, *out = json_array();
	size_t i, j;
	int rc;

	if (!out)
		return opt_error_set(OPT_EIO, "out of memory");
	if ((rc = read_entries(y, c->name, from, c->base_rev, &entries)) < 0)
		goto done;
	for (i = 0; i < json_array_size(entries); i++) {
		const json_t *e = json_array_get(entries, i), *acts, *cols;
		const char *st = json_string_value(json_object_get(e, "status"));
		const char *trx = json_string_value(json_object_get(e, "trx"));
		long rev = (long)json_integer_value(json_object_get(e, "rev"));
		json_t *keep, *rec;

		if (!trx)
			continue;
		if (json_object_get(e, "revert") || (st && strcmp(st, "aborted") == 0))
			continue;
		if (done && json_object_get(done, trx))
			continue;
		if (st && strcmp(st, "pending") == 0) {
			const char *primary = json_string_value(json_object_get(e, "primary"));
			int d = 0;
			if (!primary) {
				rc = opt_error_set(OPT_EINTEGRITY, "collection '%s' revision %ld is pending without a primary",
						   c->name, rev);
				goto done;
			}
			if ((rc = decision_of(y, primary, trx, json_integer_value(json_object_get(e, "time")) / 1000, &d)) < 0)
				goto done;
			if (d == -1)
				continue;
			if (d == 0 && !report) {
				rc = opt_error_set(OPT_EBUSY, "collection '%s': transaction %s is in flight; sync again later",
						   c->name, trx);
				goto done;
			}
		}
		acts = json_object_get(e, "actions");
		if (!json_is_array(acts)) {
			if (report)
				continue;
			rc = opt_error_set(OPT_ECONFLICT, "collection '%s': cannot replay revision %ld: its actions were "
					   "pruned by a checkpoint", c->name, rev);
			goto done;
		}
		keep = json_array();
		for (j = 0; j < json_array_size(acts); j++) {
			const json_t *a = json_array_get(acts, j);
			const char *t = json_string_value(json_object_get(a, "type"));
			if (t && strcmp(t, "checkpoint") == 0)
				continue;
			if (!report && (!t || !is_tree_or_diary_action(t))) {
				json_decref(keep);
				rc = opt_error_set(OPT_ECONFLICT, "collection '%s': cannot replay block-level actions ('%.40s' "
						   "at revision %ld); use --conflict keep-remote or fail", c->name,
						   t ? t : "?", rev);
				goto done;
			}
			json_array_append(keep, (json_t *)a);
		}
		if (json_array_size(keep) == 0) {
			json_decref(keep);
			continue;
		}
		rec = json_pack("{s:s,s:o,s:I}", "trx", trx, "actions", keep, "rev", (json_int_t)rev);
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
	hex_of(hex, at);
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

/* Run prog (through /bin/sh -c) with input on stdin; *out its action, or
 * NULL to drop ours. */
static int run_resolver(const char *prog, const json_t *input, json_t **out)
{
	FILE *in = NULL;
	char *text = NULL, *buf = NULL;
	size_t len = 0, cap = 0;
	int pfd[2] = { -1, -1 }, status, rc = 0;
	pid_t pid;
	json_t *v = NULL;

	*out = NULL;
	if (!(text = json_dumps(input, JSON_COMPACT | JSON_ENCODE_ANY)) || !(in = tmpfile())) {
		rc = opt_error_set(OPT_EIO, "cannot prepare the resolver's input: %s", strerror(errno));
		goto done;
	}
	if (fputs(text, in) == EOF || fputc('\n', in) == EOF || fflush(in) == EOF || fseek(in, 0, SEEK_SET) < 0) {
		rc = opt_error_set(OPT_EIO, "cannot prepare the resolver's input: %s", strerror(errno));
		goto done;
	}
	if (pipe(pfd) < 0) {
		rc = opt_error_set(OPT_EIO, "cannot run the resolver: %s", strerror(errno));
		goto done;
	}
	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		rc = opt_error_set(OPT_EIO, "cannot run the resolver: %s", strerror(errno));
		goto done;
	}
	if (pid == 0) {
		/* the program gets the default SIGPIPE, whatever ours is */
		signal(SIGPIPE, SIG_DFL);
		dup2(fileno(in), 0);
		dup2(pfd[1], 1);
		close(pfd[0]);
		close(pfd[1]);
		execl("/bin/sh", "sh", "-c", prog, (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	pfd[1] = -1;
	for (;;) {
		ssize_t n;
		if (len + 4096 > cap) {
			char *nb = realloc(buf, cap = cap ? cap * 2 : 8192);
			if (!nb) {
				rc = opt_error_set(OPT_EIO, "out of memory");
				break;
			}
			buf = nb;
		}
		n = read(pfd[0], buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (rc < 0)
		goto done;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		rc = opt_error_set(OPT_ECONFLICT, "the resolver '%.200s' failed (%s %d)", prog,
				   WIFEXITED(status) ? "exit status" : "signal",
				   WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
		goto done;
	}
	buf[len] = '\0';
	if (opt_json_parse(&v, buf, len) < 0) {
		rc = opt_error_set(OPT_ECONFLICT, "the resolver '%.200s' printed no JSON action or null (%s)", prog,
				   opt_error_last());
		goto done;
	}
	if (json_is_null(v)) {
		json_decref(v);
		v = NULL;
	} else if (!json_is_object(v) || !json_is_string(json_object_get(v, "type"))) {
		rc = opt_error_set(OPT_ECONFLICT, "the resolver '%.200s' printed something that is neither an action "
				   "nor null", prog);
		goto done;
	}
	*out = v;
	v = NULL;
done:
	json_decref(v);
	if (pfd[0] >= 0)
		close(pfd[0]);
	if (pfd[1] >= 0)
		close(pfd[1]);
	if (in)
		fclose(in);
	free(text);
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

/* Move refs/opt/collections/C from L to T for each of v, all under one
 * lock set; with backup, keep L in refs/opt/sync/backup/C.  OPT_ECONFLICT
 * when a collection moved since it was read (plan again). */
static int move_heads(struct opt_sync *y, struct coll **v, size_t n, int backup, int64_t deadline)
{
	char ref[REFLEN], bref[REFLEN];
	unsigned tries = 0;
	size_t i;
	int rc;

	for (;;) {
		git_transaction *tx = NULL;
		int locked = 0;

		if (git_transaction_new(&tx, y->repo) < 0)
			return opt_git_fail(OPT_EIO, "cannot move collections");
		rc = 0;
		for (i = 0; i < n && rc == 0; i++) {
			snprintf(ref, sizeof(ref), REF_COLL "%s", v[i]->name);
			snprintf(bref, sizeof(bref), REF_BACKUP "%s", v[i]->name);
			git_error_clear();
			rc = git_transaction_lock_ref(tx, ref);
			if (rc == 0 && backup)
				rc = git_transaction_lock_ref(tx, bref);
		}
		if (rc == GIT_ELOCKED) {
			locked = 1;
		} else if (rc < 0) {
			rc = opt_git_fail(OPT_EIO, "cannot lock collections");
		} else {
			for (i = 0; i < n && rc == 0; i++) {
				git_oid cur;
				int has;
				snprintf(ref, sizeof(ref), REF_COLL "%s", v[i]->name);
				snprintf(bref, sizeof(bref), REF_BACKUP "%s", v[i]->name);
				if ((has = opt_git_ref_get(y->repo, ref, &cur)) < 0) {
					rc = has;
					break;
				}
				if (has != v[i]->has_L || (has && !git_oid_equal(&cur, &v[i]->L))) {
					rc = opt_error_set(OPT_ECONFLICT, "collection '%s' changed meanwhile", v[i]->name);
					break;
				}
				if (backup && (has = opt_git_ref_get(y->repo, bref, &cur)) != 0) {
					rc = has < 0 ? has : opt_error_set(OPT_ECONFLICT, "collection '%s' has a replay in progress",
									     v[i]->name);
					break;
				}
				if (git_transaction_set_target(tx, ref, &v[i]->T, NULL, "opt-sync: to the remote head") < 0 ||
				    (backup && v[i]->has_L &&
				     git_transaction_set_target(tx, bref, &v[i]->L, NULL, "opt-sync: replay backup") < 0))
					rc = opt_git_fail(OPT_EIO, "cannot move collections");
			}
			if (rc == 0 && git_transaction_commit(tx) < 0)
				rc = opt_git_fail(OPT_EIO, "cannot move collections");
		}
		git_transaction_free(tx);
		if (!locked)
			return rc;
		if (opt_now_ms() >= deadline)
			return opt_error_set(OPT_EBUSY, "collections stayed locked by other writers");
		opt_sleep_ms(opt_backoff_ms(tries < 8 ? tries : 8, 2, 200));
		tries++;
	}
}

/* ---- running a replay ---- */

/* Replay every collection with a backup ref among names (NULL: all with
 * one): our transactions from the backup after the common base, minus
 * those already replayed, on the current head; then drop the backup.
 * Emits a record per collection, or with counts (an object) sets
 * counts[name] to the number of transactions replayed instead. */
static int replay_backups(struct opt_sync *y, const char *remote, const json_t *names, const char *policy,
			  const struct opt_sync_opts *o, json_t *counts, json_t *prepared)
{
	json_t *all = NULL, *queues = json_object(), *docs = json_object();
	struct coll *cs = NULL;
	size_t nc = 0, i, j;
	char ref[REFLEN], bref[REFLEN];
	int64_t deadline = opt_now_ms() + busy_timeout(o);
	int rc;

	if (!queues || !docs) {
		rc = opt_error_set(OPT_EIO, "out of memory");
		goto done;
	}
	if ((rc = refs_under(y->repo, REF_BACKUP, &all)) < 0)
		goto done;
	cs = calloc(json_array_size(all) + 1, sizeof(*cs));
	if (!cs) {
		rc = opt_error_set(OPT_EIO, "out of memory");
		goto done;
	}
	for (i = 0; i < json_array_size(all); i++) {
		const char *name = json_string_value(json_array_get(all, i));
		struct coll *c = &cs[nc];
		json_t *d;
		int has;

		if (names) {
			for (j = 0; j < json_array_size(names); j++)
				if (strcmp(json_string_value(json_array_get(names, j)), name) == 0)
					break;
			if (j == json_array_size(names))
				continue;
		}
		if (!opt_store_name_valid(name))
			continue;
		c->name = strdup(name);
		nc++;
		snprintf(ref, sizeof(ref), REF_COLL "%s", name);
		snprintf(bref, sizeof(bref), REF_BACKUP "%s", name);
		if ((rc = opt_git_ref_get(y->repo, bref, &c->B)) < 0 || (has = opt_git_ref_get(y->repo, ref, &c->L)) < 0) {
			rc = rc < 0 ? rc : has;
			goto done;
		}
		c->has_L = has;
		if (!has) {
			rc = opt_error_set(OPT_EINTEGRITY, "collection '%s' is gone while its replay is pending", name);
			goto done;
		}
		if ((rc = base_of(y, name, &c->B, &c->L, &c->base_rev)) < 0)
			goto done;
		if (prepared && json_object_get(prepared, name)) {
			/* planned (and resolved) before the move */
			c->ours = json_incref(json_object_get(prepared, name));
		} else {
			d = json_object();
			if ((rc = replayed_trx(y, name, &c->L, c->base_rev, d)) < 0 ||
			    (rc = plan_ours(y, c, &c->B, d, 0)) < 0 || (rc = plan_theirs(y, c, &c->L)) < 0) {
				json_decref(d);
				goto done;
			}
			json_decref(d);
			if (policy && strncmp(policy, "exec:", 5) == 0 && (rc = resolve_all(c, policy + 5)) < 0)
				goto done;
		}
		/* queue its transactions; gather each one's parts */
		{
			json_t *q = json_array();
			json_object_set_new(queues, name, q);
			for (j = 0; j < json_array_size(c->ours); j++) {
				json_t *t = json_array_get(c->ours, j), *doc, *cols;
				const char *trx = json_string_value(json_object_get(t, "trx"));
				if (json_array_size(json_object_get(t, "actions")) == 0)
					continue;
				doc = json_object_get(docs, trx);
				if (!doc) {
					doc = json_pack("{s:{}}", "collections");
					json_object_set_new(docs, trx, doc);
				}
				cols = json_object_get(doc, "collections");
				json_object_set(cols, name, json_object_get(t, "actions"));
				json_array_append_new(q, json_string(trx));
			}
		}
	}
	/* run them: each when it is first in the queue of every collection
	 * it has a part in (the order of each collection stays) */
	for (;;) {
		int progress_made = 0, left = 0;
		for (i = 0; i < nc; i++) {
			json_t *q = json_object_get(queues, cs[i].name);
			while (json_array_size(q) > 0) {
				const char *trx = json_string_value(json_array_get(q, 0));
				json_t *doc = json_object_get(docs, trx), *cols = json_object_get(doc, "collections"), *out = NULL;
				const char *cn;
				json_t *unused;
				int ready = 1;
				char summary[64];
				struct opt_txn_opts to = { NULL, summary, o ? o->busy_timeout_ms : 0, 0 };

				json_object_foreach(cols, cn, unused) {
					json_t *oq = json_object_get(queues, cn);
					if (!json_array_size(oq) || strcmp(json_string_value(json_array_get(oq, 0)), trx) != 0)
						ready = 0;
				}
				if (!ready)
					break;
				snprintf(summary, sizeof(summary), REPLAY_PREFIX "%s", trx);
				rc = opt_txdoc_run(y->s, doc, &to, &out);
				json_decref(out);
				if (rc < 0) {
					char msg[1024];
					snprintf(msg, sizeof(msg), "%s", opt_error_last());
					if (rc == OPT_EINVAL || rc == OPT_ENOTFOUND)
						rc = OPT_ECONFLICT;
					rc = opt_error_set(rc, "cannot replay transaction %s: %s", trx, msg);
					goto done;
				}
				json_object_foreach(cols, cn, unused) {
					json_array_remove(json_object_get(queues, cn), 0);
					for (j = 0; j < nc; j++)
						if (strcmp(cs[j].name, cn) == 0)
							cs[j].replayed++;
				}
				progress_made = 1;
			}
			left += json_array_size(q) > 0;
		}
		if (!left)
			break;
		if (!progress_made) {
			rc = opt_error_set(OPT_ECONFLICT, "cannot order the replay of multi-collection transactions");
			goto done;
		}
	}
	/* done: drop the backups, report */
	for (i = 0; i < nc; i++) {
		git_oid head;
		snprintf(bref, sizeof(bref), REF_BACKUP "%s", cs[i].name);
		snprintf(ref, sizeof(ref), REF_COLL "%s", cs[i].name);
		if ((rc = ref_cas(y->repo, bref, NULL, &cs[i].B, deadline)) < 0)
			goto done;
		if ((rc = opt_git_ref_get(y->repo, ref, &head)) < 0)
			goto done;
		if (counts) {
			/* the caller reports */
			json_object_set_new(counts, cs[i].name, json_integer(cs[i].replayed));
			continue;
		}
		if ((rc = opt_sync_emit_rec(o, json_pack("{s:s,s:s,s:I,s:s,s:I}", "remote", remote, "collection", cs[i].name, "rev",
					    (json_int_t)(rc ? rev_of(y, cs[i].name, &head) : 0), "status", "replayed",
					    "replayed", (json_int_t)cs[i].replayed))) != 0)
			goto done;
	}
	rc = 0;
done:
	for (i = 0; cs && i < nc; i++)
		coll_clear(&cs[i]);
	free(cs);
	json_decref(all);
	json_decref(queues);
	json_decref(docs);
	return rc;
}

/* The diverged collections v (L, T set): apply the policy.  Emits the
 * records; OPT_ECONFLICT for fail (after the reports). */
static int reconcile(struct opt_sync *y, const char *remote, struct coll **v, size_t n, const struct opt_sync_opts *o,
		     int64_t deadline, json_t *counts)
{
	const char *policy = o && o->conflict ? o->conflict : "replay";
	json_t *names = NULL, *prepared = NULL;
	size_t i;
	int rc = 0;

	if (n == 0)
		return 0;
	for (i = 0; i < n; i++) {
		const char *kl = NULL, *kt = NULL;
		if ((rc = base_of(y, v[i]->name, &v[i]->L, &v[i]->T, &v[i]->base_rev)) < 0)
			return rc;
		if (strcmp(policy, "keep-remote") == 0)
			continue;
		if ((rc = kind_at(y, v[i]->name, &v[i]->L, &kl)) < 0 || (rc = kind_at(y, v[i]->name, &v[i]->T, &kt)) < 0)
			return rc;
		if (strcmp(kl, kt) != 0 && strcmp(policy, "fail") != 0)
			return opt_error_set(OPT_ECONFLICT, "collection '%s' is a %s here and a %s at remote '%s': it cannot be "
					     "replayed (--conflict keep-remote takes theirs)", v[i]->name, kl, kt, remote);
		if ((rc = plan_ours(y, v[i], &v[i]->L, NULL, strcmp(policy, "fail") == 0)) < 0 ||
		    (rc = plan_theirs(y, v[i], &v[i]->T)) < 0)
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
						(json_int_t)rev_of(y, v[i]->name, &v[i]->L), "status",
						strcmp(policy, "keep-remote") == 0 ? "kept-remote" : "replayed", "dry_run", 1);
			if (rec && v[i]->ours)
				json_object_set_new(rec, "replayed", json_integer((json_int_t)json_array_size(v[i]->ours)));
			if ((rc = opt_sync_emit_rec(o, rec)) != 0)
				return rc;
		}
		return 0;
	}
	if (strcmp(policy, "keep-remote") == 0) {
		if ((rc = move_heads(y, v, n, 0, deadline)) < 0)
			return rc;
		for (i = 0; i < n; i++)
			if ((rc = opt_sync_emit_rec(o, json_pack("{s:s,s:s,s:I,s:s}", "remote", remote, "collection", v[i]->name, "rev",
						    (json_int_t)rev_of(y, v[i]->name, &v[i]->T), "status", "kept-remote"))) != 0)
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
	if ((rc = move_heads(y, v, n, 1, deadline)) < 0) {
		json_decref(prepared);
		return rc;
	}
	names = json_array();
	for (i = 0; i < n; i++)
		json_array_append_new(names, json_string(v[i]->name));
	rc = replay_backups(y, remote, names, policy, o, counts, prepared);
	json_decref(names);
	json_decref(prepared);
	return rc;
}

/* A sync cut short left backups: finish those replays first. */
static int resume(struct opt_sync *y, const char *remote, const struct opt_sync_opts *o, json_t *counts)
{
	json_t *all = NULL;
	int rc;

	if ((rc = refs_under(y->repo, REF_BACKUP, &all)) < 0)
		return rc;
	if (json_array_size(all) > 0 && o && o->conflict && strcmp(o->conflict, "keep-remote") == 0 && !o->dry_run) {
		/* what was not replayed yet is dropped */
		rc = delete_refs_under(y->repo, REF_BACKUP);
	} else if (json_array_size(all) > 0 && !(o && o->dry_run)) {
		rc = replay_backups(y, remote, NULL, o && o->conflict ? o->conflict : "replay", o, counts, NULL);
	}
	json_decref(all);
	return rc;
}

static int check_policy(const struct opt_sync_opts *o)
{
	const char *p = o ? o->conflict : NULL;

	if (!p || strcmp(p, "replay") == 0 || strcmp(p, "keep-remote") == 0 || strcmp(p, "fail") == 0)
		return 0;
	if (strncmp(p, "exec:", 5) == 0 && p[5])
		return 0;
	return opt_error_set(OPT_EINVAL, "unknown conflict policy '%s' (replay, keep-remote, fail, exec:PROG)", opt_esc(p));
}

/* ---- reports in name order ---- */

/* pull and push report one record per collection, in name order, at the
 * end (also when they fail half-way); other records (the reports of
 * --conflict fail) go out at once. */
struct held {
	const struct opt_sync_opts *o;
	json_t *recs;    /* collection -> record */
};

static int hold_cb(const json_t *rec, void *arg)
{
	struct held *h = arg;
	const char *name = json_string_value(json_object_get(rec, "collection"));

	if (!name || !json_object_get(rec, "status"))
		return h->o->emit ? h->o->emit(rec, h->o->arg) : 0;
	return json_object_set(h->recs, name, (json_t *)rec) < 0 ? opt_error_set(OPT_EIO, "out of memory") : 0;
}

static void hold_progress(const char *what, size_t done, size_t total, void *arg)
{
	struct held *h = arg;

	progress(h->o, what, done, total);
}

static void hold_init(struct held *h, struct opt_sync_opts *lo, const struct opt_sync_opts *o)
{
	h->o = o;
	h->recs = json_object();
	*lo = *o;
	lo->emit = hold_cb;
	lo->progress = o->progress ? hold_progress : NULL;
	lo->arg = h;
}

/* Emit what is held, in name order; rc stays unless emitting fails. */
static int hold_flush(struct held *h, int rc)
{
	json_t *names = json_array();
	const char *name;
	json_t *v;
	size_t i, j, n;
	int erc = 0;
	char msg[1024];

	snprintf(msg, sizeof(msg), "%s", opt_error_last());
	json_object_foreach(h->recs, name, v)
		json_array_append_new(names, json_string(name));
	n = json_array_size(names);
	for (i = 1; i < n; i++)
		for (j = i; j > 0 && strcmp(json_string_value(json_array_get(names, j - 1)),
					     json_string_value(json_array_get(names, j))) > 0; j--) {
			json_t *t = json_incref(json_array_get(names, j - 1));
			json_array_set(names, j - 1, json_array_get(names, j));
			json_array_set_new(names, j, t);
		}
	for (i = 0; i < n && erc == 0; i++)
		if (h->o->emit)
			erc = h->o->emit(json_object_get(h->recs, json_string_value(json_array_get(names, i))), h->o->arg);
	json_decref(names);
	json_decref(h->recs);
	h->recs = NULL;
	if (rc < 0) {
		opt_error_set(rc, "%s", msg);
		return rc;
	}
	return erc ? erc : rc;
}

/* ---- pull ---- */

/* A transaction is taken whole or not at all: a collection of h whose
 * revisions we lack (from the remote's head down to where ours meets it)
 * hold a transaction over a skipped collection is skipped too (and so on,
 * until no more are), and its tracking ref goes back to where this fetch
 * found it. */
static int skip_sharing(struct opt_sync *y, struct remote *r, struct heads *h, int64_t deadline)
{
	json_t *shared = json_array();  /* per head: [[trx, collection], ...] */
	char ref[REFLEN], hex[GIT_OID_HEXSZ + 1];
	size_t i, j, k;
	int rc = 0, grew;

	if (!shared)
		return opt_error_set(OPT_EIO, "out of memory");
	for (i = 0; i < h->n && rc == 0; i++) {
		struct head *e = &h->v[i];
		struct opt_snap *snap = NULL, *p = NULL;
		json_t *pairs = json_array();
		git_oid L, id;
		int hasL;

		if (!pairs || json_array_append_new(shared, pairs) < 0) {
			rc = opt_error_set(OPT_EIO, "out of memory");
			break;
		}
		snprintf(ref, sizeof(ref), REF_COLL "%s", e->name);
		if ((hasL = opt_git_ref_get(y->repo, ref, &L)) < 0) {
			rc = hasL;
			break;
		}
		if (hasL && git_oid_equal(&L, &e->new))
			continue;
		hex_of(hex, &e->new);
		if ((rc = opt_snap_open_commit(&snap, y->s, e->name, hex)) < 0)
			break;
		while (snap) {
			const char *cols = opt_snap_trailer(snap, "Opt-Collections");
			git_oid_fromstr(&id, opt_snap_commit(snap));
			if (hasL) {
				int d = git_oid_equal(&id, &L) ? 1 : descends(y->repo, &L, &id);
				if (d < 0)
					rc = d;
				if (d)
					break;
			}
			if (cols) {
				char *dup = strdup(cols), *tok, *save = NULL, et[4 * OPT_NAME_MAX + 8], etrx[4 * OPT_ID_MAX + 8];
				snprintf(etrx, sizeof(etrx), "%s", opt_esc(opt_snap_trx(snap)));
				for (tok = dup ? strtok_r(dup, ",", &save) : NULL; tok; tok = strtok_r(NULL, ",", &save)) {
					snprintf(et, sizeof(et), "%s", opt_esc(tok));
					json_array_append_new(pairs, json_pack("[s,s]", etrx, et));
				}
				free(dup);
			}
			rc = opt_snap_parent(&p, snap);
			opt_snap_free(snap);
			snap = p;
			if (rc == OPT_ENOTFOUND) {
				opt_error_clear();
				rc = 0;
				break;
			}
			if (rc < 0)
				break;
		}
		opt_snap_free(snap);
	}
	if (rc < 0) {
		json_decref(shared);
		return rc;
	}
	do {
		grew = 0;
		for (i = 0; i < h->n && rc == 0; i++) {
			json_t *pairs = json_array_get(shared, i), *pair, *why;
			if (json_object_get(r->skipped, h->v[i].name))
				continue;
			json_array_foreach(pairs, j, pair) {
				const char *tok = json_string_value(json_array_get(pair, 1));
				if (!tok || strcmp(tok, h->v[i].name) == 0 || !(why = json_object_get(r->skipped, tok)))
					continue;
				opt_error_set(OPT_ECONFLICT, "it shares transaction %s with '%s', which was skipped",
					      json_string_value(json_array_get(pair, 0)), tok);
				rc = skip_add(r, h->v[i].name, (int)json_integer_value(json_object_get(why, "code")));
				grew = 1;
				break;
			}
		}
	} while (grew && rc == 0);
	json_decref(shared);
	/* drop them from h, their tracking refs where they were */
	for (i = k = 0; i < h->n; i++) {
		struct head *e = &h->v[i];
		if (!json_object_get(r->skipped, e->name)) {
			h->v[k++] = *e;
			continue;
		}
		snprintf(ref, sizeof(ref), REF_REMOTES "%s/%s", r->name, e->name);
		if (rc == 0 && strcmp(e->status, "unchanged") != 0)
			rc = ref_cas(y->repo, ref, e->has_old ? &e->old : NULL, &e->new, deadline);
		free(e->name);
	}
	h->n = k;
	return rc;
}

static int valid_names(const char *const *colls, size_t n)
{
	size_t i;
	int rc;

	for (i = 0; i < n; i++)
		if ((rc = opt_store_name_check(colls[i])) < 0)
			return rc;
	return 0;
}

static json_t *rec_of(struct opt_sync *y, const char *remote, const char *name, const git_oid *at, const char *status,
		      int dry_run)
{
	json_t *rec = json_pack("{s:s,s:s,s:I,s:s}", "remote", remote, "collection", name, "rev",
				(json_int_t)(at ? rev_of(y, name, at) : 0), "status", status);
	if (rec && dry_run)
		json_object_set_new(rec, "dry_run", json_true());
	return rec;
}

static int pull(struct opt_sync *y, const char *remote, const char *const *colls, size_t n,
		const struct opt_sync_opts *o);

int opt_sync_pull(struct opt_sync *y, const char *remote, const char *const *colls, size_t n,
		  const struct opt_sync_opts *o)
{
	struct opt_sync_opts lo;
	struct held h;

	hold_init(&h, &lo, o ? o : &no_opts);
	return hold_flush(&h, pull(y, remote, colls, n, &lo));
}

int opt_sync_pull_url(struct opt_sync *y, const char *name, const char *url, const char *const *colls, size_t n,
		      const struct opt_sync_opts *o)
{
	int rc;

	if (!opt_sync_remote_name_valid(name))
		return opt_error_set(OPT_EINVAL, "invalid remote name '%s'", opt_esc(name));
	y->url = url;
	rc = opt_sync_pull(y, name, colls, n, o);
	y->url = NULL;
	return rc;
}

int opt_sync_close_over(struct opt_sync *y, const char *remote, json_t *names, int *grew)
{
	char stop[REFLEN];

	if (remote && !opt_sync_remote_name_valid(remote))
		return opt_error_set(OPT_EINVAL, "invalid remote name '%s'", opt_esc(remote));
	/* without a remote: the whole history (no ref is kept there) */
	if (remote)
		snprintf(stop, sizeof(stop), REF_REMOTES "%s/", remote);
	else
		snprintf(stop, sizeof(stop), "refs/opt/sync/none/");
	return close_over_transactions(y, REF_COLL, stop, names, grew);
}

static int pull(struct opt_sync *y, const char *remote, const char *const *colls, size_t n,
		const struct opt_sync_opts *o)
{
	struct remote r;
	struct heads h = { 0 };
	struct coll *cs = NULL, **dv = NULL;
	json_t *more = NULL;
	const char **mc = NULL;
	size_t i, nd = 0;
	int64_t deadline;
	int rc;

	o = o ? o : &no_opts;
	y->partial = 0;
	deadline = opt_now_ms() + busy_timeout(o);
	if ((rc = valid_names(colls, n)) < 0 || (rc = check_policy(o)) < 0)
		return rc;
	if ((rc = remote_open(y, &r, remote, o)) < 0)
		return rc;
	if ((rc = resume(y, r.name, o, NULL)) < 0)
		goto done;
	if ((rc = fetch_verified(y, &r, colls, n, o->dry_run, &h)) < 0 || (rc = check_named(&h, &r, colls, n)) < 0)
		goto done;
	if ((n || o->want) && !o->dry_run) {
		/* the other collections of multi-collection transactions come
		 * too (also those o->want turned down: a transaction is taken
		 * whole or not at all) */
		char tp[REFLEN];
		int grew = 0;
		snprintf(tp, sizeof(tp), REF_REMOTES "%s/", r.name);
		if (!(more = json_array())) {
			rc = opt_error_set(OPT_EIO, "out of memory");
			goto done;
		}
		for (i = 0; i < n; i++)
			json_array_append_new(more, json_string(colls[i]));
		for (i = 0; !n && i < h.n; i++)
			json_array_append_new(more, json_string(h.v[i].name));
		if ((rc = close_over_transactions(y, tp, REF_COLL, more, &grew)) < 0)
			goto done;
		if (grew) {
			struct opt_sync_opts all = *o;
			mc = calloc(json_array_size(more) + 1, sizeof(*mc));
			if (!mc) {
				rc = opt_error_set(OPT_EIO, "out of memory");
				goto done;
			}
			for (i = 0; i < json_array_size(more); i++)
				mc[i] = json_string_value(json_array_get(more, i));
			heads_clear(&h);
			all.want = NULL;
			r.o = &all;
			rc = fetch_verified(y, &r, mc, json_array_size(more), 0, &h);
			r.o = o;
			if (rc < 0)
				goto done;
		}
	}
	if (!o->dry_run && json_object_size(r.skipped) && (rc = skip_sharing(y, &r, &h, deadline)) < 0)
		goto done;
	cs = calloc(h.n + 1, sizeof(*cs));
	dv = calloc(h.n + 1, sizeof(*dv));
	if (!cs || !dv) {
		rc = opt_error_set(OPT_EIO, "out of memory");
		goto done;
	}
	for (i = 0; i < h.n; i++) {
		struct head *e = &h.v[i];
		struct coll *c = &cs[i];
		char ref[REFLEN];
		const char *status = NULL;
		unsigned tries = 0;

		c->name = strdup(e->name);
		c->T = e->new;
		c->has_T = 1;
		snprintf(ref, sizeof(ref), REF_COLL "%s", e->name);
		for (;;) {
			if ((rc = opt_git_ref_get(y->repo, ref, &c->L)) < 0)
				goto done;
			c->has_L = rc;
			if (c->has_L && git_oid_equal(&c->L, &c->T)) {
				status = "up-to-date";
				break;
			}
			if (!c->has_L) {
				status = "new";
			} else if (o->dry_run && !have_object(y, &c->T)) {
				/* not downloaded: judge by what we fetched before */
				int d = e->has_old ? (git_oid_equal(&c->L, &e->old) ? 1 : descends(y->repo, &e->old, &c->L)) : 0;
				if (d < 0) {
					rc = d;
					goto done;
				}
				status = d ? "fast-forward" : !o->conflict || strcmp(o->conflict, "replay") == 0 ? "replayed" :
					 strcmp(o->conflict, "keep-remote") == 0 ? "kept-remote" : "conflict";
				break;
			} else {
				int d = descends(y->repo, &c->T, &c->L);
				if (d < 0) {
					rc = d;
					goto done;
				}
				if (d) {
					status = "fast-forward";
				} else if ((d = descends(y->repo, &c->L, &c->T)) != 0) {
					if (d < 0) {
						rc = d;
						goto done;
					}
					status = "ahead";
					break;
				} else {
					dv[nd++] = c;
					break;
				}
			}
			if (o->dry_run)
				break;
			rc = ref_cas(y->repo, ref, &c->T, c->has_L ? &c->L : NULL, deadline);
			if (rc == 0)
				break;
			if (rc == OPT_EIO && !c->has_L) {
				/* a collection that clashes with it came since the listing */
				char other[OPT_NAME_MAX + 1], tref[REFLEN], msg[1024];
				snprintf(msg, sizeof(msg), "%s", opt_error_last());
				if ((rc = opt_store_name_clash(y->s, c->name, other)) < 0)
					goto done;
				if (rc == 1) {
					snprintf(tref, sizeof(tref), REF_REMOTES "%s/%s", r.name, c->name);
					if (strcmp(e->status, "unchanged") != 0 &&
					    (rc = ref_cas(y->repo, tref, e->has_old ? &e->old : NULL, &e->new, deadline)) < 0)
						goto done;
					opt_error_set(OPT_ECONFLICT, "collection '%s' cannot be created: collection '%s' exists",
						      c->name, other);
					if ((rc = skip_add(&r, c->name, OPT_ECONFLICT)) < 0)
						goto done;
					status = NULL;
					break;
				}
				rc = opt_error_set(OPT_EIO, "%s", msg);
				goto done;
			}
			if (rc != OPT_ECONFLICT || opt_now_ms() >= deadline)
				goto done;
			opt_sleep_ms(opt_backoff_ms(tries < 8 ? tries : 8, 2, 200));
			tries++;
		}
		if (status && (rc = opt_sync_emit_rec(o, rec_of(y, r.name, c->name,
						    strcmp(status, "ahead") == 0 ? &c->L : &c->T, status, o->dry_run))) != 0)
			goto done;
	}
	rc = reconcile(y, r.name, dv, nd, o, deadline, NULL);
done:
	if (json_object_size(r.skipped)) {
		y->partial = rc == 0;
		rc = skip_report(&r, o, rc);
	}
	for (i = 0; cs && i < h.n; i++)
		coll_clear(&cs[i]);
	free(cs);
	free(dv);
	free(mc);
	json_decref(more);
	heads_clear(&h);
	remote_close(&r);
	return rc;
}

/* ---- push ---- */

/* Write what pb holds into the path remote r as one pack. */
static int pack_to_peer(struct remote *r, git_packbuilder *pb)
{
	git_odb *odb = NULL;
	char dir[PATH_MAX];

	if (git_packbuilder_object_count(pb) == 0)
		return 0;
	snprintf(dir, sizeof(dir), "%s/objects/pack", git_repository_path(r->peer_repo));
	if (git_packbuilder_write(pb, dir, 0, NULL, NULL) < 0)
		return net_fail(r, "cannot write objects");
	if (git_repository_odb(&odb, r->peer_repo) == 0)
		git_odb_refresh(odb);
	git_odb_free(odb);
	return 0;
}

/* Copy what the remote lacks of nw (it has expect, may be NULL) into the
 * path remote as one pack, then compare-and-swap its ref. */
static int push_path_one(struct opt_sync *y, struct remote *r, const char *name, const git_oid *expect,
			 const git_oid *nw, int64_t deadline)
{
	git_packbuilder *pb = NULL;
	git_revwalk *w = NULL;
	char ref[REFLEN];
	int rc = 0;

	if (git_packbuilder_new(&pb, y->repo) < 0 || git_revwalk_new(&w, y->repo) < 0 ||
	    git_revwalk_push(w, nw) < 0 || (expect && git_revwalk_hide(w, expect) < 0) ||
	    git_packbuilder_insert_walk(pb, w) < 0) {
		rc = opt_git_fail(OPT_EIO, "cannot pack the objects to push");
		goto done;
	}
	if ((rc = pack_to_peer(r, pb)) < 0)
		goto done;
	snprintf(ref, sizeof(ref), REF_COLL "%s", name);
	rc = ref_cas(r->peer_repo, ref, nw, expect, deadline);
	if (rc == OPT_ECONFLICT)
		rc = opt_error_set(OPT_ECONFLICT, "remote '%s': collection '%s' moved", r->name, name);
	if (rc == 0 && opt_pack_consolidate(r->peer_repo, 0) < 0)
		opt_error_clear();
done:
	git_revwalk_free(w);
	git_packbuilder_free(pb);
	return rc;
}

/* The index of ref (refs/opt/collections/NAME) in a batch push, or nb. */
static size_t batch_index(const struct remote *r, const char *ref)
{
	size_t i, pl = strlen(REF_COLL);

	if (strncmp(ref, REF_COLL, pl) != 0)
		return r->nb;
	for (i = 0; i < r->nb; i++)
		if (strcmp(r->bnames[i], ref + pl) == 0)
			break;
	return i;
}

static int nego_cb(const git_push_update **u, size_t len, void *payload)
{
	struct remote *r = payload;
	git_oid zero;
	size_t i;

	memset(&zero, 0, sizeof(zero));
	for (i = 0; i < len; i++) {
		size_t b = r->nb ? batch_index(r, u[i]->dst_refname) : 0;
		const git_oid *want = r->nb ? (b < r->nb && r->bexpect[b] ? r->bexpect[b] : &zero)
					    : r->expect ? r->expect : &zero;
		if (!git_oid_equal(&u[i]->src, want)) {
			r->conflict = 1;
			snprintf(r->push_msg, sizeof(r->push_msg), "%s moved", u[i]->dst_refname);
			git_error_set_str(GIT_ERROR_NET, "the remote moved since it was fetched");
			return GIT_EUSER;
		}
	}
	return 0;
}

static int update_ref_cb(const char *refname, const char *status, void *data)
{
	struct remote *r = data;

	if (status) {
		size_t b = r->nb ? batch_index(r, refname) : 0;
		if (r->nb && b < r->nb)
			r->bres[b] = OPT_ECONFLICT;
		else
			r->conflict = 1;
		snprintf(r->push_msg, sizeof(r->push_msg), "%s: %s", refname, status);
	}
	return 0;
}

/* One git push of specs to r, through our callbacks (the expected old
 * values are in r): *grc gets git_remote_push's result; *gr (to free)
 * stays for the error. */
static int push_specs(struct opt_sync *y, struct remote *r, git_remote **gr, git_strarray *specs, int *grc)
{
	git_push_options po;

	if (r->conn) {
		/* connected by tracking_holds: the advertisement it checked */
		*gr = r->conn;
		r->conn = NULL;
	} else if (anon_remote(gr, y->repo, r->url) < 0) {
		return net_fail(r, "invalid URL");
	}
	git_push_options_init(&po, GIT_PUSH_OPTIONS_VERSION);
	callbacks(&po.callbacks, r);
	po.callbacks.push_negotiation = nego_cb;
	po.callbacks.push_update_reference = update_ref_cb;
	r->conflict = 0;
	r->push_msg[0] = '\0';
	r->cred_tries = 0;
	git_error_clear();
	*grc = git_remote_push(*gr, specs, &po);
	return 0;
}

/* Push over a transport that runs git receive-pack at the far end, which
 * compares the old value. */
static int push_net_one(struct opt_sync *y, struct remote *r, const char *name, const git_oid *expect,
			const git_oid *nw, int64_t deadline)
{
	git_remote *gr = NULL;
	git_strarray specs = { 0 };
	char tmp[REFLEN], *spec = NULL;
	int rc, grc;

	snprintf(tmp, sizeof(tmp), REF_PUSH "%s", name);
	{
		git_reference *ref = NULL;
		if (git_reference_create(&ref, y->repo, tmp, nw, 1, "opt-sync push") < 0)
			return opt_git_fail(OPT_EIO, "cannot prepare the push");
		git_reference_free(ref);
	}
	if (asprintf(&spec, "%s%s:" REF_COLL "%s", r->force ? "+" : "", tmp, name) < 0) {
		spec = NULL;
		rc = opt_error_set(OPT_EIO, "out of memory");
		goto done;
	}
	specs.strings = &spec;
	specs.count = 1;
	r->expect = expect;
	if ((rc = push_specs(y, r, &gr, &specs, &grc)) < 0)
		goto done;
	if (r->conflict || grc == GIT_ENONFASTFORWARD)
		rc = opt_error_set(OPT_ECONFLICT, "remote '%s': collection '%s' moved%s%s", r->name, name,
				   r->push_msg[0] ? ": " : "", r->push_msg);
	else if (grc < 0)
		rc = net_fail(r, "cannot push");
	else
		rc = 0;
done:
	(void)deadline;
	git_remote_free(gr);
	free(spec);
	{
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", opt_error_last());
		if (ref_cas(y->repo, tmp, NULL, NULL, opt_now_ms() + 1000) < 0)
			opt_error_clear();
		if (rc < 0)
			opt_error_set(rc, "%s", msg);
	}
	return rc;
}

/* Push the n collections v (local heads L, remote heads T) over one
 * connection: git receive-pack compares each old value.  res[i]: 0 when
 * v[i] was pushed, OPT_ECONFLICT when its remote ref moved (all of them
 * when the remote moved before the push began).  A transport failure is
 * returned. */
static int push_net_many(struct opt_sync *y, struct remote *r, struct coll **v, size_t n, int *res)
{
	git_remote *gr = NULL;
	git_strarray specs = { 0 };
	char **sp = calloc(n + 1, sizeof(*sp)), tmp[REFLEN];
	const char **names = calloc(n + 1, sizeof(*names));
	const git_oid **exp = calloc(n + 1, sizeof(*exp));
	size_t i, made = 0;
	int rc = 0, grc;

	if (!sp || !names || !exp) {
		rc = opt_error_set(OPT_EIO, "out of memory");
		goto done;
	}
	for (i = 0; i < n; i++, made++) {
		git_reference *ref = NULL;
		res[i] = 0;
		names[i] = v[i]->name;
		exp[i] = v[i]->has_T ? &v[i]->T : NULL;
		snprintf(tmp, sizeof(tmp), REF_PUSH "%s", v[i]->name);
		if (git_reference_create(&ref, y->repo, tmp, &v[i]->L, 1, "opt-sync push") < 0) {
			rc = opt_git_fail(OPT_EIO, "cannot prepare the push");
			goto done;
		}
		git_reference_free(ref);
		if (asprintf(&sp[i], "%s:" REF_COLL "%s", tmp, v[i]->name) < 0) {
			sp[i] = NULL;
			made++;
			rc = opt_error_set(OPT_EIO, "out of memory");
			goto done;
		}
	}
	specs.strings = sp;
	specs.count = n;
	r->nb = n;
	r->bnames = names;
	r->bexpect = exp;
	r->bres = res;
	if ((rc = push_specs(y, r, &gr, &specs, &grc)) < 0)
		goto done;
	if (r->conflict || grc == GIT_ENONFASTFORWARD) {
		for (i = 0; i < n; i++)
			res[i] = OPT_ECONFLICT;
		opt_error_set(OPT_ECONFLICT, "remote '%s' moved%s%s", r->name, r->push_msg[0] ? ": " : "", r->push_msg);
	} else if (grc < 0) {
		rc = net_fail(r, "cannot push");
	}
done:
	r->nb = 0;
	r->bnames = NULL;
	r->bexpect = NULL;
	r->bres = NULL;
	git_remote_free(gr);
	{
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", opt_error_last());
		for (i = 0; i < made; i++) {
			snprintf(tmp, sizeof(tmp), REF_PUSH "%s", v[i]->name);
			if (ref_cas(y->repo, tmp, NULL, NULL, opt_now_ms() + 1000) < 0)
				opt_error_clear();
		}
		if (rc < 0)
			opt_error_set(rc, "%s", msg);
	}
	for (i = 0; sp && i < n; i++)
		free(sp[i]);
	free(sp);
	free(names);
	free(exp);
	return rc;
}

/* Push the n collections v to the path remote with one pack, then
 * compare-and-swap their refs in order, stopping at the first that moved:
 * res[i] 0 pushed, OPT_ECONFLICT moved, OPT_EBUSY not tried. */
static int push_path_many(struct opt_sync *y, struct remote *r, struct coll **v, size_t n, int64_t deadline,
			  int *res)
{
	git_packbuilder *pb = NULL;
	git_revwalk *w = NULL;
	char ref[REFLEN];
	size_t i;
	int rc = 0, moved = 0;

	if (git_packbuilder_new(&pb, y->repo) < 0 || git_revwalk_new(&w, y->repo) < 0) {
		rc = opt_git_fail(OPT_EIO, "cannot pack the objects to push");
		goto done;
	}
	for (i = 0; i < n; i++)
		if (git_revwalk_push(w, &v[i]->L) < 0 || (v[i]->has_T && git_revwalk_hide(w, &v[i]->T) < 0)) {
			rc = opt_git_fail(OPT_EIO, "cannot pack the objects to push");
			goto done;
		}
	if (git_packbuilder_insert_walk(pb, w) < 0) {
		rc = opt_git_fail(OPT_EIO, "cannot pack the objects to push");
		goto done;
	}
	if ((rc = pack_to_peer(r, pb)) < 0)
		goto done;
	for (i = 0; i < n; i++) {
		if (moved) {
			res[i] = OPT_EBUSY;
			continue;
		}
		snprintf(ref, sizeof(ref), REF_COLL "%s", v[i]->name);
		res[i] = ref_cas(r->peer_repo, ref, &v[i]->L, v[i]->has_T ? &v[i]->T : NULL, deadline);
		if (res[i] == OPT_ECONFLICT || res[i] == OPT_EBUSY) {
			opt_error_set(res[i], "remote '%s': collection '%s' moved", r->name, v[i]->name);
			moved = 1;
		} else if (res[i] < 0) {
			rc = res[i];
			goto done;
		}
	}
	if (opt_pack_consolidate(r->peer_repo, 0) < 0)
		opt_error_clear();
done:
	git_revwalk_free(w);
	git_packbuilder_free(pb);
	return rc;
}

/* Add to names (an array) the collections that share a multi-collection
 * transaction with one of them, in the revisions of ref from_prefix+NAME
 * down to ref stop_prefix+NAME (the side that has them and the side that
 * lacks them), until nothing is added; then sort names (name order:
 * pends before their primary).  *grew (may be NULL) is set when names
 * were added. */
static int close_over_transactions(struct opt_sync *y, const char *from_prefix, const char *stop_prefix,
				   json_t *names, int *grew)
{
	size_t i, j;
	int rc = 0;

	if (grew)
		*grew = 0;
	for (i = 0; i < json_array_size(names); i++) {
		const char *name = json_string_value(json_array_get(names, i));
		struct opt_snap *snap = NULL, *p = NULL;
		char ref[REFLEN], sref[REFLEN], hex[GIT_OID_HEXSZ + 1];
		git_oid from, stop;
		int has_stop;

		snprintf(ref, sizeof(ref), "%s%s", from_prefix, name);
		snprintf(sref, sizeof(sref), "%s%s", stop_prefix, name);
		if ((rc = opt_git_ref_get(y->repo, ref, &from)) <= 0) {
			if (rc < 0)
				return rc;
			continue;
		}
		if ((has_stop = opt_git_ref_get(y->repo, sref, &stop)) < 0)
			return has_stop;
		hex_of(hex, &from);
		if ((rc = opt_snap_open_commit(&snap, y->s, name, hex)) < 0)
			return rc;
		while (snap) {
			const char *cols = opt_snap_trailer(snap, "Opt-Collections");
			git_oid id;
			git_oid_fromstr(&id, opt_snap_commit(snap));
			if (has_stop && git_oid_equal(&id, &stop))
				break;
			if (cols) {
				char *dup = strdup(cols), *tok, *save = NULL;
				for (tok = dup ? strtok_r(dup, ",", &save) : NULL; tok; tok = strtok_r(NULL, ",", &save)) {
					if (!opt_store_name_valid(tok))
						continue;
					for (j = 0; j < json_array_size(names); j++)
						if (strcmp(json_string_value(json_array_get(names, j)), tok) == 0)
							break;
					if (j == json_array_size(names)) {
						json_array_append_new(names, json_string(tok));
						if (grew)
							*grew = 1;
					}
				}
				free(dup);
			}
			/* below the common base nothing is missing on either side */
			if (has_stop) {
				int d = descends(y->repo, &stop, &id);
				if (d < 0) {
					rc = d;
					break;
				}
				if (d)
					break;
			}
			rc = opt_snap_parent(&p, snap);
			opt_snap_free(snap);
			snap = p;
			if (rc == OPT_ENOTFOUND) {
				opt_error_clear();
				rc = 0;
				break;
			}
			if (rc < 0)
				return rc;
		}
		opt_snap_free(snap);
		if (rc < 0)
			return rc;
	}
	{
		size_t n = json_array_size(names), a, b;
		for (a = 1; a < n; a++)
			for (b = a; b > 0 && strcmp(json_string_value(json_array_get(names, b - 1)),
						     json_string_value(json_array_get(names, b))) > 0; b--) {
				json_t *t = json_incref(json_array_get(names, b - 1));
				json_array_set(names, b - 1, json_array_get(names, b));
				json_array_set_new(names, b, t);
			}
	}
	return rc;
}

static int push(struct opt_sync *y, const char *remote, const char *const *colls, size_t n,
		const struct opt_sync_opts *o);

/* Repair collection c at replica r (see opt_sync_push, o->replica):
 * ahead: the replica's head descends from ours.  OPT_ECONFLICT or
 * OPT_EBUSY when something moved meanwhile (fetch and plan again). */
static int repair_replica(struct opt_sync *y, struct remote *r, struct coll *c, int ahead,
			  const struct opt_sync_opts *o, int64_t deadline)
{
	char ref[REFLEN], tref[REFLEN];
	json_t *names = NULL, *counts = NULL, *rec;
	git_oid nl;
	long replayed = 0;
	int rc;

	if (o->dry_run)
		return opt_sync_emit_rec(o, rec_of(y, r->name, c->name, &c->T, ahead ? "fast-forward" : "repaired", 1));
	snprintf(ref, sizeof(ref), REF_COLL "%s", c->name);
	snprintf(tref, sizeof(tref), REF_REMOTES "%s/%s", r->name, c->name);
	if (ahead) {
		/* verified by the fetch: take it as a pull would */
		if ((rc = move_heads(y, &c, 1, 0, deadline)) < 0)
			return rc;
		return opt_sync_emit_rec(o, rec_of(y, r->name, c->name, &c->T, "fast-forward", 0));
	}
	/* its transactions we lack, replayed here as a replay of ours would be */
	snprintf(tref, sizeof(tref), REF_BACKUP "%s", c->name);
	if ((rc = ref_cas(y->repo, tref, &c->T, NULL, deadline)) < 0)
		return rc == OPT_ECONFLICT ? opt_error_set(OPT_EBUSY, "collection '%s' has a replay in progress", c->name)
					   : rc;
	names = json_pack("[s]", c->name);
	counts = json_object();
	if (!names || !counts) {
		rc = opt_error_set(OPT_EIO, "out of memory");
		goto done;
	}
	if ((rc = replay_backups(y, r->name, names, "replay", o, counts, NULL)) < 0)
		goto done;
	replayed = (long)json_integer_value(json_object_get(counts, c->name));
	if ((rc = opt_git_ref_get(y->repo, ref, &nl)) <= 0) {
		rc = rc < 0 ? rc : opt_error_set(OPT_ENOTFOUND, "no collection '%s'", c->name);
		goto done;
	}
	/* then the replica follows: from what the fetch saw, to ours */
	r->force = 1;
	rc = r->path ? push_path_one(y, r, c->name, &c->T, &nl, deadline) : push_net_one(y, r, c->name, &c->T, &nl, deadline);
	r->force = 0;
	if (rc < 0)
		goto done;
	snprintf(tref, sizeof(tref), REF_REMOTES "%s/%s", r->name, c->name);
	if (ref_cas(y->repo, tref, &nl, &c->T, deadline) < 0)
		opt_error_clear();  /* the next fetch sets it */
	rec = rec_of(y, r->name, c->name, &nl, "repaired", 0);
	if (rec)
		json_object_set_new(rec, "replayed", json_integer(replayed));
	rc = opt_sync_emit_rec(o, rec);
done:
	json_decref(names);
	json_decref(counts);
	return rc;
}


int opt_sync_push(struct opt_sync *y, const char *remote, const char *const *colls, size_t n,
		  const struct opt_sync_opts *o)
{
	struct opt_sync_opts lo;
	struct held h;

	hold_init(&h, &lo, o ? o : &no_opts);
	return hold_flush(&h, push(y, remote, colls, n, &lo));
}

/* 1 if a commit of collection c to be pushed (after what the remote has)
 * belongs to a multi-collection transaction (Opt-Primary), 0 if none does,
 * <0 on failure.  git receive-pack applies the refs of one push one by one,
 * not atomically: such a push goes ref by ref, in name order, so that a
 * primary's decision never lands while a pending revision of its
 * transaction was refused. */
static int multi_to_push(struct opt_sync *y, const struct coll *c)
{
	git_revwalk *w = NULL;
	git_oid id;
	int rc = 0, n = 0;

	if (git_revwalk_new(&w, y->repo) < 0 || git_revwalk_push(w, &c->L) < 0 ||
	    (c->has_T && git_revwalk_hide(w, &c->T) < 0)) {
		git_revwalk_free(w);
		return opt_git_fail(OPT_EIO, "cannot walk the history to push");
	}
	while (rc == 0 && git_revwalk_next(&id, w) == 0) {
		git_commit *cm = NULL;
		if (git_commit_lookup(&cm, y->repo, &id) < 0) {
			rc = opt_git_fail(OPT_EINTEGRITY, "cannot read a commit to push");
			break;
		}
		if (strstr(git_commit_message(cm), "\nOpt-Primary: "))
			rc = 1;
		git_commit_free(cm);
		if (++n > 100000)
			rc = 1;  /* a long history: go ref by ref to be safe */
	}
	git_revwalk_free(w);
	return rc;
}

/* Does the remote hold, for each of the n collections cn, what its
 * tracking ref says (both absent counts)?  Asked of receive-pack, whose
 * connection stays in r->conn for the push that follows: 1 and *h gets
 * the tracking refs as heads; 0 when one differs (r->conn closed). */
static int tracking_holds(struct opt_sync *y, struct remote *r, const char **cn, size_t n, struct heads *h)
{
	git_remote_callbacks cb;
	const git_remote_head **refs = NULL;
	size_t nr = 0, i, k;
	int rc;

	callbacks(&cb, r);
	if (anon_remote(&r->conn, y->repo, r->url) < 0)
		return net_fail(r, "invalid URL");
	r->cred_tries = 0;
	if (git_remote_connect(r->conn, GIT_DIRECTION_PUSH, &cb, NULL, NULL) < 0 ||
	    git_remote_ls(&refs, &nr, r->conn) < 0) {
		rc = net_fail(r, "cannot connect");
		goto fail;
	}
	for (i = 0; i < n; i++) {
		char tref[REFLEN], ref[REFLEN];
		const git_oid *at = NULL;
		git_oid id;
		struct head *e;
		snprintf(ref, sizeof(ref), REF_COLL "%s", cn[i]);
		for (k = 0; k < nr && !at; k++)
			if (strcmp(refs[k]->name, ref) == 0)
				at = &refs[k]->oid;
		snprintf(tref, sizeof(tref), REF_REMOTES "%s/%s", r->name, cn[i]);
		if ((rc = opt_git_ref_get(y->repo, tref, &id)) < 0)
			goto fail;
		if (!rc != !at || (at && !git_oid_equal(at, &id))) {
			rc = 0;  /* it moved since we last saw it */
			goto fail;
		}
		if (!at)
			continue;
		if (!(e = heads_add(h, cn[i]))) {
			rc = opt_error_set(OPT_EIO, "out of memory");
			goto fail;
		}
		e->old = e->new = id;
		e->has_old = e->has_new = 1;
		e->status = "unchanged";
	}
	return 1;
fail:
	heads_clear(h);
	git_remote_free(r->conn);
	r->conn = NULL;
	return rc;
}

static int push(struct opt_sync *y, const char *remote, const char *const *colls, size_t n,
		const struct opt_sync_opts *o)
{
	struct remote r;
	struct heads h = { 0 };
	json_t *names = NULL, *done_set = json_object(), *replayed = json_object();
	struct coll *cs = NULL, **dv = NULL, **ff = NULL;
	const char **cn = NULL;
	int *bres = NULL;
	size_t i, nn, nd, nf;
	int64_t deadline;
	unsigned attempt = 0;
	int rc, optimistic, batch;

	o = o ? o : &no_opts;
	deadline = opt_now_ms() + busy_timeout(o);
	if (!done_set || !replayed) {
		json_decref(done_set);
		json_decref(replayed);
		return opt_error_set(OPT_EIO, "out of memory");
	}
	if ((rc = valid_names(colls, n)) < 0 || (rc = check_policy(o)) < 0) {
		json_decref(done_set);
		json_decref(replayed);
		return rc;
	}
	if ((rc = remote_open(y, &r, remote, o)) < 0) {
		json_decref(done_set);
		json_decref(replayed);
		return rc;
	}
	if ((rc = resume(y, r.name, o, replayed)) < 0)
		goto done;
	/* what to push: the named collections, or all of ours */
	if (n) {
		names = json_array();
		for (i = 0; i < n; i++) {
			char ref[REFLEN];
			git_oid id;
			snprintf(ref, sizeof(ref), REF_COLL "%s", colls[i]);
			if ((rc = opt_git_ref_get(y->repo, ref, &id)) <= 0) {
				if (rc == 0)
					rc = opt_error_set(OPT_ENOTFOUND, "no collection '%s'", colls[i]);
				goto done;
			}
			json_array_append_new(names, json_string(colls[i]));
		}
		{
			char tp[REFLEN];
			snprintf(tp, sizeof(tp), REF_REMOTES "%s/", r.name);
			if ((rc = close_over_transactions(y, REF_COLL, tp, names, NULL)) < 0)
				goto done;
		}
	} else if ((rc = opt_store_list(y->s, &names)) < 0) {
		goto done;
	}
	nn = json_array_size(names);
	cs = calloc(nn + 1, sizeof(*cs));
	dv = calloc(nn + 1, sizeof(*dv));
	ff = calloc(nn + 1, sizeof(*ff));
	cn = calloc(nn + 1, sizeof(*cn));
	if (!cs || !dv || !ff || !cn) {
		rc = opt_error_set(OPT_EIO, "out of memory");
		goto done;
	}
	for (i = 0; i < nn; i++)
		cn[i] = json_string_value(json_array_get(names, i));
	/* over the network, the first attempt trusts the tracking refs: when
	 * the remote has not moved since we last saw it, everything to push
	 * fast-forwards it, and one connection (receive-pack, which compares
	 * each ref with what we expect) does it all.  A remote that moved
	 * refuses, and then we fetch, verify and plan again as always. */
	optimistic = !o->dry_run && !r.path;
	for (;;) {
		int again = 0;
		heads_clear(&h);
		git_remote_free(r.conn);
		r.conn = NULL;
		if (optimistic && (rc = tracking_holds(y, &r, cn, nn, &h)) <= 0) {
			if (rc < 0)
				goto done;
			optimistic = 0;  /* the remote moved since we last saw it */
		}
		if (!optimistic && (rc = fetch_verified(y, &r, cn, nn, o->dry_run, &h)) < 0)
			goto done;
		nd = nf = 0;
		for (i = 0; i < nn; i++) {
			struct coll *c = &cs[i];
			struct head *e = heads_find(&h, cn[i]);
			char ref[REFLEN];
			int d;

			json_t *src = o->replicas ? json_object_get(o->replicas, cn[i]) : NULL;
			int replica = o->replica || src;

			if (json_object_get(done_set, cn[i]))
				continue;
			coll_clear(c);
			c->name = strdup(cn[i]);
			snprintf(ref, sizeof(ref), REF_COLL "%s", cn[i]);
			if ((rc = opt_git_ref_get(y->repo, ref, &c->L)) < 0)
				goto done;
			c->has_L = rc;
			if (json_is_string(src) && git_oid_fromstr(&c->L, json_string_value(src)) == 0) {
				/* a replica takes what its home acknowledged, not our head */
				git_oid own = c->L;
				int on_ours = c->has_L;
				if (on_ours && (rc = opt_git_ref_get(y->repo, ref, &own)) < 0)
					goto done;
				on_ours = on_ours && git_oid_equal(&own, &c->L);
				c->has_L = 1;
				if (e && !git_oid_equal(&e->new, &c->L) && !on_ours && have_object(y, &e->new)) {
					/* the replica has more than the home's state we give
					 * it, and our head is elsewhere: a replica past that
					 * state is left to its home; one that diverged is
					 * repaired from our head (below) */
					if ((d = descends(y->repo, &e->new, &c->L)) < 0) {
						rc = d;
						goto done;
					}
					if (d) {
						json_object_set_new(done_set, cn[i], json_true());
						if ((rc = opt_sync_emit_rec(o, rec_of(y, r.name, cn[i], &e->new, "up-to-date",
										      o->dry_run))) != 0)
							goto done;
						continue;
					}
				}
			}
			if (!c->has_L) {
				json_object_set_new(done_set, cn[i], json_true());
				continue;
			}
			if (e) {
				c->T = e->new;
				c->has_T = 1;
			}
			if (c->has_T && git_oid_equal(&c->L, &c->T)) {
				json_object_set_new(done_set, cn[i], json_true());
				json_t *rec = rec_of(y, r.name, cn[i], &c->L,
						     json_object_get(replayed, cn[i]) ? "replayed" : "up-to-date", o->dry_run);
				if (rec && json_object_get(replayed, cn[i]))
					json_object_set(rec, "replayed", json_object_get(replayed, cn[i]));
				if ((rc = opt_sync_emit_rec(o, rec)) != 0)
					goto done;
				continue;
			}
			if (!c->has_T) {
				ff[nf++] = c;
				continue;
			}
			if (o->dry_run && !have_object(y, &c->T)) {
				/* the remote moved to what we have not fetched */
				d = e->has_old ? (git_oid_equal(&c->L, &e->old) ? 1 : descends(y->repo, &e->old, &c->L)) : 0;
				if (d < 0) {
					rc = d;
					goto done;
				}
				json_object_set_new(done_set, cn[i], json_true());
				if ((rc = opt_sync_emit_rec(o, rec_of(y, r.name, cn[i], &c->L,
							 d ? "up-to-date" : replica ? "repaired" :
							 !o->conflict || strcmp(o->conflict, "replay") == 0 ?
							 "replayed" : strcmp(o->conflict, "keep-remote") == 0 ? "kept-remote" : "conflict",
							 1))) != 0)
					goto done;
				continue;
			}
			if ((d = descends(y->repo, &c->L, &c->T)) < 0) {
				rc = d;
				goto done;
			}
			if (d) {
				ff[nf++] = c;
				continue;
			}
			if ((d = descends(y->repo, &c->T, &c->L)) < 0) {
				rc = d;
				goto done;
			}
			if (replica && optimistic) {
				/* it has revisions we lack, as of what we last saw:
				 * fetch them first */
				again = 1;
				break;
			}
			if (replica) {
				/* a replica with revisions we lack: ahead of us (d) or
				 * diverged; repaired from our head */
				if (json_is_string(src)) {
					if ((rc = opt_git_ref_get(y->repo, ref, &c->L)) <= 0) {
						rc = rc < 0 ? rc : opt_error_set(OPT_ENOTFOUND, "no collection '%s'", cn[i]);
						goto done;
					}
					if ((d = descends(y->repo, &c->T, &c->L)) < 0) {
						rc = d;
						goto done;
					}
				}
				if ((rc = repair_replica(y, &r, c, d, o, deadline)) == OPT_ECONFLICT || rc == OPT_EBUSY) {
					again = 1;
					break;
				}
				if (rc != 0)
					goto done;
				json_object_set_new(done_set, cn[i], json_true());
				continue;
			}
			if (d) {
				/* the remote is ahead and we have nothing new */
				json_object_set_new(done_set, cn[i], json_true());
				if ((rc = opt_sync_emit_rec(o, rec_of(y, r.name, cn[i], &c->L, "up-to-date", o->dry_run))) != 0)
					goto done;
				continue;
			}
			dv[nd++] = c;
		}
		if (again && optimistic) {
			optimistic = 0;
			continue;
		}
		if (again)
			nd = nf = 0;  /* plan again after the backoff */
		if (optimistic && nd) {
			/* diverged from what we last saw: fetch first after all */
			optimistic = 0;
			continue;
		}
		if (nd) {
			const char *policy = o->conflict ? o->conflict : "replay";
			int keep = strcmp(policy, "keep-remote") == 0;
			if ((rc = reconcile(y, r.name, dv, nd, o, deadline, replayed)) < 0)
				goto done;
			for (i = 0; i < nd; i++)
				if (keep || o->dry_run)
					json_object_set_new(done_set, dv[i]->name, json_true());
			if (!keep && !o->dry_run)
				continue;  /* now they fast-forward */
		}
		/* all of them at once: one pack, one connection (over the
		 * network only when no multi-collection transaction goes) */
		free(bres);
		bres = NULL;
		batch = !o->dry_run && nf > 1;
		for (i = 0; batch && !r.path && i < nf; i++) {
			int m = multi_to_push(y, ff[i]);
			if (m < 0) {
				rc = m;
				goto done;
			}
			batch = !m;
		}
		if (batch) {
			if (!(bres = calloc(nf, sizeof(*bres)))) {
				rc = opt_error_set(OPT_EIO, "out of memory");
				goto done;
			}
			progress(o, "pushing", 0, nf);
			if ((rc = r.path ? push_path_many(y, &r, ff, nf, deadline, bres)
					 : push_net_many(y, &r, ff, nf, bres)) < 0)
				goto done;
		}
		/* fast-forward the remote, in name order: pends before their
		 * primary; stop at the first that moved under us */
		for (i = 0; i < nf; i++) {
			struct coll *c = ff[i];
			char tref[REFLEN];
			if (o->dry_run) {
				json_object_set_new(done_set, c->name, json_true());
				if ((rc = opt_sync_emit_rec(o, rec_of(y, r.name, c->name, &c->L, "pushed", 1))) != 0)
					goto done;
				continue;
			}
			progress(o, c->name, i, nf);
			rc = bres ? bres[i]
			     : r.path ? push_path_one(y, &r, c->name, c->has_T ? &c->T : NULL, &c->L, deadline)
				      : push_net_one(y, &r, c->name, c->has_T ? &c->T : NULL, &c->L, deadline);
			if (rc == OPT_ECONFLICT || rc == OPT_EBUSY) {
				again = 1;
				if (bres)
					continue;  /* the rest went in the same push: record those that took */
				break;
			}
			if (rc < 0)
				goto done;
			snprintf(tref, sizeof(tref), REF_REMOTES "%s/%s", r.name, c->name);
			if (ref_cas(y->repo, tref, &c->L, c->has_T ? &c->T : NULL, deadline) < 0)
				opt_error_clear();  /* the next fetch sets it */
			json_object_set_new(done_set, c->name, json_true());
			{
				json_t *rec = rec_of(y, r.name, c->name, &c->L,
						     json_object_get(replayed, c->name) ? "replayed" : "pushed", 0);
				if (rec && json_object_get(replayed, c->name))
					json_object_set(rec, "replayed", json_object_get(replayed, c->name));
				if ((rc = opt_sync_emit_rec(o, rec)) != 0)
					goto done;
			}
		}
		if (!again)
			break;
		if (optimistic) {
			/* the remote moved since we last saw it: fetch now */
			optimistic = 0;
			continue;
		}
		if (opt_now_ms() >= deadline) {
			rc = opt_error_set(OPT_EBUSY, "remote '%s' kept moving: gave up after %u attempts (%s)", r.name,
					   attempt + 1, opt_error_last());
			goto done;
		}
		opt_sleep_ms(opt_backoff_ms(attempt < 8 ? attempt : 8, 5, 500));
		attempt++;
	}
	rc = 0;
done:
	for (i = 0; cs && i < json_array_size(names); i++)
		coll_clear(&cs[i]);
	free(cs);
	free(dv);
	free(ff);
	free(cn);
	free(bres);
	json_decref(names);
	json_decref(done_set);
	json_decref(replayed);
	heads_clear(&h);
	remote_close(&r);
	return rc;
}

/* ---- remove ---- */

int opt_sync_remove(struct opt_sync *y, const char *remote, const char *const *colls, size_t n,
		    const struct opt_sync_opts *o)
{
	struct remote r;
	struct heads h = { 0 };
	int64_t deadline;
	size_t i;
	int rc;

	o = o ? o : &no_opts;
	deadline = opt_now_ms() + busy_timeout(o);
	if ((rc = valid_names(colls, n)) < 0)
		return rc;
	if ((rc = remote_open(y, &r, remote, o)) < 0)
		return rc;
	if ((rc = fetch_verified(y, &r, colls, n, o->dry_run, &h)) < 0 || (rc = check_named(&h, &r, colls, n)) < 0)
		goto done;
	for (i = 0; rc == 0 && i < h.n; i++) {
		struct head *e = &h.v[i];
		char ref[REFLEN], tref[REFLEN];
		const char *why = NULL;
		git_oid L;
		int has, d = 0;

		snprintf(ref, sizeof(ref), REF_COLL "%s", e->name);
		snprintf(tref, sizeof(tref), REF_REMOTES "%s/%s", r.name, e->name);
		if ((has = opt_git_ref_get(y->repo, ref, &L)) < 0) {
			rc = has;
			break;
		}
		if (!has)
			why = "this store does not hold it";
		else if (git_oid_equal(&L, &e->new))
			d = 1;
		else if (!have_object(y, &e->new))
			why = "it holds revisions this store has not fetched";
		else if ((d = descends(y->repo, &L, &e->new)) < 0) {
			rc = d;
			break;
		} else if (!d)
			why = "it holds revisions this store lacks";
		if (why) {
			rc = opt_sync_emit_rec(o, json_pack("{s:s,s:s,s:s,s:s}", "remote", r.name, "collection", e->name, "status", "kept",
					       "reason", why));
			continue;
		}
		if (o->dry_run) {
			rc = opt_sync_emit_rec(o, json_pack("{s:s,s:s,s:s,s:b}", "remote", r.name, "collection", e->name, "status",
					       "removed", "dry_run", 1));
			continue;
		}
		if (r.path) {
			rc = ref_cas(r.peer_repo, ref, NULL, &e->new, deadline);
		} else {
			git_remote *gr = NULL;
			git_strarray specs = { 0 };
			char *spec = ref;
			int grc = 0;
			specs.strings = &spec;
			specs.count = 1;
			memmove(ref + 1, ref, strlen(ref) + 1);
			ref[0] = ':';
			r.expect = &e->new;
			if ((rc = push_specs(y, &r, &gr, &specs, &grc)) == 0) {
				if (r.conflict || grc == GIT_ENONFASTFORWARD)
					rc = OPT_ECONFLICT;
				else if (grc < 0)
					rc = net_fail(&r, "cannot remove");
			}
			git_remote_free(gr);
		}
		if (rc == OPT_ECONFLICT || rc == OPT_EBUSY) {
			/* it moved meanwhile: keep it */
			opt_error_clear();
			rc = opt_sync_emit_rec(o, json_pack("{s:s,s:s,s:s,s:s}", "remote", r.name, "collection", e->name, "status", "kept",
					       "reason", "it moved meanwhile"));
			continue;
		}
		if (rc < 0)
			break;
		if (ref_cas(y->repo, tref, NULL, NULL, deadline) < 0)
			opt_error_clear();
		rc = opt_sync_emit_rec(o, json_pack("{s:s,s:s,s:s}", "remote", r.name, "collection", e->name, "status", "removed"));
	}
done:
	heads_clear(&h);
	remote_close(&r);
	return rc;
}

/* ---- status ---- */

static int status_one(struct opt_sync *y, const char *remote, const struct opt_sync_opts *o)
{
	json_t *local = NULL, *tracked = NULL, *all = json_object();
	char prefix[REFLEN], ref[REFLEN];
	const char *name;
	json_t *v;
	size_t i;
	int rc;

	snprintf(prefix, sizeof(prefix), REF_REMOTES "%s/", remote);
	if ((rc = opt_store_list(y->s, &local)) < 0 || (rc = refs_under(y->repo, prefix, &tracked)) < 0)
		goto done;
	for (i = 0; i < json_array_size(local); i++)
		json_object_set_new(all, json_string_value(json_array_get(local, i)), json_true());
	for (i = 0; i < json_array_size(tracked); i++)
		json_object_set_new(all, json_string_value(json_array_get(tracked, i)), json_true());
	{
		/* in name order */
		json_t *keys = json_array();
		json_object_foreach(all, name, v)
			json_array_append_new(keys, json_string(name));
		json_decref(all);
		all = keys;
		{
			size_t n = json_array_size(all), a, b;
			for (a = 1; a < n; a++)
				for (b = a; b > 0 && strcmp(json_string_value(json_array_get(all, b - 1)),
							     json_string_value(json_array_get(all, b))) > 0; b--) {
					json_t *t = json_incref(json_array_get(all, b - 1));
					json_array_set(all, b - 1, json_array_get(all, b));
					json_array_set_new(all, b, t);
				}
		}
	}
	for (i = 0; i < json_array_size(all); i++) {
		git_oid L, T;
		int hasL, hasT;
		long lr = 0, tr = 0, br = 0;

		name = json_string_value(json_array_get(all, i));
		if (!opt_store_name_valid(name))
			continue;
		snprintf(ref, sizeof(ref), REF_COLL "%s", name);
		if ((hasL = opt_git_ref_get(y->repo, ref, &L)) < 0) {
			rc = hasL;
			goto done;
		}
		snprintf(ref, sizeof(ref), "%s%s", prefix, name);
		if ((hasT = opt_git_ref_get(y->repo, ref, &T)) < 0) {
			rc = hasT;
			goto done;
		}
		if (hasL)
			lr = rev_of(y, name, &L);
		if (hasT)
			tr = rev_of(y, name, &T);
		if (hasL && hasT && (rc = base_of(y, name, &L, &T, &br)) < 0)
			goto done;
		rc = opt_sync_emit_rec(o, json_pack("{s:s,s:s,s:I,s:I}", "collection", name, "remote", remote, "ahead",
				       (json_int_t)(lr - br), "behind", (json_int_t)(tr - br)));
		if (rc)
			goto done;
	}
	rc = 0;
done:
	json_decref(local);
	json_decref(tracked);
	json_decref(all);
	return rc;
}

int opt_sync_status(struct opt_sync *y, const char *remote, const struct opt_sync_opts *o)
{
	json_t *list = NULL;
	size_t i;
	int rc;

	o = o ? o : &no_opts;
	if (remote) {
		char *url = NULL;
		if ((rc = remote_url(y, remote, &url)) < 0)
			return rc;
		free(url);
		return status_one(y, remote, o);
	}
	if ((rc = opt_sync_remote_list(y, &list)) < 0)
		return rc;
	for (i = 0; i < json_array_size(list) && rc == 0; i++)
		rc = status_one(y, json_string_value(json_object_get(json_array_get(list, i), "name")), o);
	json_decref(list);
	return rc;
}

/* ---- clone ---- */

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* The public key of the store at path, if it has one: *key (65 bytes). */
static int peer_key(const char *path, char key[OPT_KEY_HEX + 1])
{
	int rc = opt_identity_public_at(path, key);

	if (rc < 0) {
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", opt_error_last());
		return opt_error_set(OPT_ENET, "cannot read the remote store's %s",
				     strncmp(msg, "cannot read the store's ", 24) == 0 ? msg + 24 : msg);
	}
	return 0;
}

/* 1 if the array of strings a holds v. */
static int has_string(const json_t *a, const char *v)
{
	size_t i;

	for (i = 0; i < json_array_size(a); i++)
		if (strcmp(json_string_value(json_array_get(a, i)), v) == 0)
			return 1;
	return 0;
}

/* A clone into a store made beforehand failed: put back what it changed
 * (the remote, refs it made, keys it trusted or renamed), from refs (all
 * ref names before) and trusted (opt_trust_list before).  The objects it
 * brought stay, unreferenced.  Best effort: the clone's error stands. */
static void clone_undo(struct opt_sync *y, struct opt_store *s, const json_t *refs, const json_t *trusted)
{
	json_t *now = NULL;
	char ref[REFLEN];
	size_t i, j;

	opt_sync_remote_rm(y, "origin");
	if (refs && refs_under(y->repo, "refs/", &now) == 0)
		for (i = 0; i < json_array_size(now); i++) {
			const char *name = json_string_value(json_array_get(now, i));
			if (has_string(refs, name))
				continue;
			snprintf(ref, sizeof(ref), "refs/%s", name);
			ref_cas(y->repo, ref, NULL, NULL, opt_now_ms() + busy_timeout(NULL));
		}
	json_decref(now);
	now = NULL;
	if (trusted && opt_trust_list(s, &now) == 0)
		for (i = 0; i < json_array_size(now); i++) {
			const json_t *e = json_array_get(now, i);
			const char *key = json_string_value(json_object_get(e, "key"));
			const char *name = json_string_value(json_object_get(e, "name"));
			if (json_is_true(json_object_get(e, "self")))
				continue;
			for (j = 0; j < json_array_size(trusted); j++)
				if (strcmp(json_string_value(json_object_get(json_array_get(trusted, j), "key")), key) == 0)
					break;
			if (j == json_array_size(trusted)) {
				opt_trust_remove(s, key);
			} else {
				const char *was = json_string_value(json_object_get(json_array_get(trusted, j), "name"));
				if (was && name && strcmp(was, name) != 0)
					opt_trust_add(s, key, was);
			}
		}
	json_decref(now);
	opt_error_clear();
}

int opt_sync_clone(struct opt_store **out, const char *url, const char *dir, const char *const *trust,
		   size_t ntrust, const struct opt_sync_opts *o)
{
	struct opt_store *s = NULL;
	struct opt_sync *y = NULL;
	json_t *list = NULL, *refs_before = NULL, *trust_before = NULL;
	char *path = NULL, key[OPT_KEY_HEX + 1];
	struct stat st;
	int created = 0, partial = 0, rc;
	size_t i;

	if (out)
		*out = NULL;
	o = o ? o : &no_opts;
	for (i = 0; i < ntrust; i++)
		if (!opt_key_hex_valid(trust[i]))
			return opt_error_set(OPT_EINVAL, "invalid key '%s' (64 hex characters)", opt_esc(trust[i]));
	if ((rc = check_policy(o)) < 0)
		return rc;
	if (stat(dir, &st) == 0 && !S_ISDIR(st.st_mode))
		return opt_error_set(OPT_EINVAL, "cannot clone into '%s': not a directory", dir);
	if ((rc = opt_store_create(&s, dir, &created)) < 0)
		return rc;
	if ((rc = opt_sync_open(&y, s)) < 0)
		goto done;
	if ((rc = opt_sync_lock(y, 0)) < 0)
		goto done;
	if (!created) {
		if ((rc = opt_store_list(s, &list)) < 0)
			goto done;
		if (json_array_size(list) > 0) {
			rc = opt_error_set(OPT_EINVAL, "cannot clone into store '%s': it has collections", dir);
			goto done;
		}
		json_decref(list);
		list = NULL;
		if ((rc = opt_sync_remote_list(y, &list)) < 0)
			goto done;
		if (json_array_size(list) > 0) {
			rc = opt_error_set(OPT_EINVAL, "cannot clone into store '%s': it has remotes", dir);
			goto done;
		}
		/* what a failed clone must put back */
		if ((rc = refs_under(y->repo, "refs/", &refs_before)) < 0 || (rc = opt_trust_list(s, &trust_before)) < 0)
			goto done;
	}
	if ((rc = opt_sync_remote_add(y, "origin", url)) < 0)
		goto done;
	if (opt_sync_url_is_local(url, &path)) {
		struct stat ps;
		if (stat(path, &ps) < 0) {
			rc = opt_error_set(OPT_ENET, "cannot reach '%s': %s", url, strerror(errno));
			goto done;
		}
		if ((rc = peer_key(path, key)) < 0)
			goto done;
		if (key[0] && (rc = opt_trust_add(s, key, "origin")) < 0)
			goto done;
	}
	for (i = 0; i < ntrust; i++)
		if ((rc = opt_trust_add(s, trust[i], "origin")) < 0)
			goto done;
	rc = opt_sync_pull(y, "origin", NULL, 0, o);
	/* all but collections skipped: the clone stays */
	partial = rc < 0 && opt_sync_partial(y);
	if (rc == OPT_EINTEGRITY && strstr(opt_error_last(), "does not trust")) {
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", opt_error_last());
		opt_error_set(rc, "%s; to clone from a peer whose entries are signed by other keys, trust them first "
			      "(opt-sync clone --trust KEY, or opt-block init DIR and opt-log trust KEY before the clone)",
			      msg);
	}
done:
	if (rc < 0 && trust_before) {
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", opt_error_last());
		clone_undo(y, s, refs_before, trust_before);
		opt_error_set(rc, "%s", msg);
	}
	free(path);
	json_decref(list);
	json_decref(refs_before);
	json_decref(trust_before);
	opt_sync_free(y);
	if (rc < 0 && !partial) {
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", opt_error_last());
		opt_store_free(s);
		s = NULL;
		if (created)
			nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
		opt_error_set(rc, "%s", msg);
	}
	if (out)
		*out = s;
	else
		opt_store_free(s);
	return rc;
}
