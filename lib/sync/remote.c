/* remote.c - remotes: names, URLs, the store's remote config, opening a
 * remote, the transport's callbacks, and the listing of a remote's
 * collections with those we cannot take. */
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

int sync_anon_remote(git_remote **out, git_repository *repo, const char *url)
{
	git_remote_create_options co;

	git_remote_create_options_init(&co, GIT_REMOTE_CREATE_OPTIONS_VERSION);
	co.repository = repo;
	co.flags = GIT_REMOTE_CREATE_SKIP_INSTEADOF | GIT_REMOTE_CREATE_SKIP_DEFAULT_FETCHSPEC;
	return git_remote_create_with_opts(out, url, &co);
}

int sync_remote_url(struct opt_sync *y, const char *name, char **url)
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
	rc = sync_remote_url(y, name, &old);
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

	if ((rc = sync_remote_url(y, name, &url)) < 0)
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
	opt_ref_tracking(prefix, sizeof(prefix), name, NULL);
	rc = sync_delete_refs_under(y->repo, prefix);
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
		if (sync_remote_url(y, name, &url) < 0) {
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

void sync_remote_close(struct remote *r)
{
	json_decref(r->skipped);
	if (r->view[0])
		nftw(r->view, sync_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
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

/* Every pack index of a peer on this machine has a sound shape before
 * libgit2 reads through it (a forged one, its checksum right, sends
 * libgit2's reader outside the pack: a crash). 0, or OPT_EINTEGRITY. */
static int peer_packs_check(struct remote *r)
{
	char dir[PATH_MAX], idx[PATH_MAX], pack[PATH_MAX];
	struct dirent *d;
	DIR *dh;
	int rc = 0;

	snprintf(dir, sizeof(dir), "%s/objects/pack", git_repository_path(r->peer_repo));
	if (!(dh = opendir(dir)))
		return 0;               /* no packs: nothing to check */
	while (rc == 0 && (d = readdir(dh)) != NULL) {
		size_t l = strlen(d->d_name);
		if (l < 5 || strcmp(d->d_name + l - 4, ".idx") != 0)
			continue;
		if (snprintf(idx, sizeof(idx), "%s/%s", dir, d->d_name) >= (int)sizeof(idx) ||
		    snprintf(pack, sizeof(pack), "%s/%.*s.pack", dir, (int)(l - 4), d->d_name) >= (int)sizeof(pack) ||
		    access(pack, F_OK) != 0)
			continue;       /* an index left alone: git ignores it */
		if (opt_pack_idx_check_shape(idx, pack) < 0 && access(idx, F_OK) == 0 && access(pack, F_OK) == 0) {
			/* (a pack that vanished meanwhile was consolidated by a
			 * writer there: nothing is read from it) */
			char msg[512];
			snprintf(msg, sizeof(msg), "%s", opt_error_last());
			rc = opt_error_set(OPT_EINTEGRITY, "remote '%s' (%s): %s (refused; 'git index-pack' there makes it again)",
					   r->name, r->url, msg);
		}
	}
	closedir(dh);
	return rc;
}

int sync_remote_open(struct opt_sync *y, struct remote *r, const char *name, const struct opt_sync_opts *o)
{
	int rc;

	memset(r, 0, sizeof(*r));
	r->o = o;
	snprintf(r->name, sizeof(r->name), "%s", name);
	if (y->url && !(r->url = strdup(y->url)))
		return opt_error_set(OPT_EIO, "out of memory");
	if (!y->url && (rc = sync_remote_url(y, name, &r->url)) < 0)
		return rc;
	if (opt_sync_url_is_local(r->url, &r->path)) {
		peer_owner_check(0);
		rc = opt_store_open(&r->peer, r->path);
		if (rc == 0 && opt_store__repo_open(r->peer, &r->peer_repo) < 0) {
			rc = opt_git_fail(OPT_ENET, "cannot open remote");
			peer_owner_check(1);
			sync_remote_close(r);
			return rc;
		}
		peer_owner_check(1);
		if (rc < 0) {
			char msg[512];
			snprintf(msg, sizeof(msg), "%s", opt_error_last());
			sync_remote_close(r);
			return opt_error_set(OPT_ENET, "cannot reach remote '%s': %s", name, msg);
		}
		if ((rc = peer_packs_check(r)) < 0) {
			sync_remote_close(r);
			return rc;
		}
	} else if (strncmp(r->url, "https://", 8) == 0) {
		/* the CA bundle is loaded only when an https peer needs it */
		if ((rc = tls_setup(y, r)) < 0) {
			sync_remote_close(r);
			return rc;
		}
	}
	return 0;
}

/* ---- transport ---- */

int sync_net_fail(struct remote *r, const char *what)
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
		sync_progress(r->o, st->received_objects < st->total_objects ? "receiving objects" : "indexing objects",
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

void sync_callbacks(git_remote_callbacks *cb, struct remote *r)
{
	git_remote_init_callbacks(cb, GIT_REMOTE_CALLBACKS_VERSION);
	cb->credentials = cred_cb;
	cb->certificate_check = cert_cb;
	cb->transfer_progress = xfer_cb;
	cb->payload = r;
}

/* ---- the names of the remote's collections ---- */

int sync_skip_add(struct remote *r, const char *name, int code)
{
	char esc[4 * OPT_NAME_MAX + 8];
	const char *why;
	json_t *v;

	if (!r->skipped && !(r->skipped = json_object()))
		return opt_error_set(OPT_EIO, "out of memory");
	snprintf(esc, sizeof(esc), "%s", opt_esc(name));
	/* the reason (error.h): an integrity skip whose message is no
	 * integrity failure is a name that cannot be one of ours */
	why = opt_error_reason() ? opt_error_reason() : code == OPT_EINTEGRITY ? "malformed" : "conflict";
	v = json_pack("{s:i,s:s,s:s}", "code", code, "error", opt_error_last(), "reason", why);
	if (!v || json_object_set_new(r->skipped, esc, v) < 0)
		return opt_error_set(OPT_EIO, "out of memory");
	opt_error_clear();
	return 0;
}

void sync_skip_keep_wanted(struct remote *r, const char *const *colls, size_t n, const struct opt_sync_opts *o)
{
	const char *name;
	json_t *v;
	void *tmp;

	json_object_foreach_safe(r->skipped, tmp, name, v) {
		if (!opt_name_wanted(name, colls, n) || (o && o->want && !o->want(name, o->want_arg)))
			json_object_del(r->skipped, name);
	}
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

int sync_skip_report(struct remote *r, const struct opt_sync_opts *o, int rc)
{
	json_t *names = json_array(), *v;
	const char *name;
	size_t n = json_object_size(r->skipped), i, n2;
	int code = OPT_ECONFLICT, erc = 0, own;
	char msg[1024], lead[OPT_REMOTE_NAME_MAX + 16];

	if (!names)
		return rc < 0 ? rc : opt_error_set(OPT_EIO, "out of memory");
	if (n == 0) {
		json_decref(names);
		return rc;
	}
	snprintf(msg, sizeof(msg), "%s", opt_error_last());
	json_object_foreach(r->skipped, name, v)
		json_array_append_new(names, json_string(name));
	if (sync_sort_strings(names) < 0) {
		json_decref(names);
		return rc < 0 ? opt_error_set(rc, "%s", msg) : OPT_EIO;
	}
	for (i = 0; i < n; i++) {
		json_t *rec;
		name = json_string_value(json_array_get(names, i));
		v = json_object_get(r->skipped, name);
		if (json_integer_value(json_object_get(v, "code")) == OPT_EINTEGRITY)
			code = OPT_EINTEGRITY;
		rec = json_pack("{s:s,s:s,s:s,s:O,s:O}", "remote", r->name, "collection", name, "status", "skipped",
				"error", json_object_get(v, "error"), "reason", json_object_get(v, "reason"));
		if (rec && o && o->dry_run)
			json_object_set_new(rec, "dry_run", json_true());
		if (!erc)
			erc = opt_sync_emit_rec(o, rec);
		else
			json_decref(rec);
	}
	/* the message names the first that was not skipped only for
	 * sharing a transaction with another (the cause, not an effect) */
	for (i = 0; i + 1 < n; i++) {
		v = json_object_get(r->skipped, json_string_value(json_array_get(names, i)));
		if (json_integer_value(json_object_get(v, "code")) == code &&
		    strcmp(json_string_value(json_object_get(v, "reason")), "linked") != 0)
			break;
	}
	name = json_string_value(json_array_get(names, i));
	v = json_object_get(r->skipped, name);
	/* a collection refused by the fetch: its message names the remote */
	n2 = (size_t)snprintf(lead, sizeof(lead), "remote '%s': ", r->name);
	own = strncmp(json_string_value(json_object_get(v, "error")), lead, n2) == 0;
	if (rc < 0)
		opt_error_set(rc, "%s", msg);
	else if (erc)
		rc = erc;
	else if (n == 1 && own)
		rc = opt_error_set(code, "%s", json_string_value(json_object_get(v, "error")));
	else if (n == 1)
		rc = opt_error_set(code, "remote '%s': collection '%s' skipped: %s", r->name, name,
				   json_string_value(json_object_get(v, "error")));
	else
		rc = opt_error_set(code, "remote '%s': %zu collections skipped, %s '%s': %s", r->name, n,
				   i ? "among them" : "first", name,
				   json_string_value(json_object_get(v, "error")) + (own ? n2 : 0));
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
			nftw(path, sync_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	}
	if (d)
		closedir(d);
}

static int path_refs(struct remote *r, json_t *names, int *odd);
static int view_make(struct opt_sync *y, struct remote *r, json_t *names);
static int view_fill(struct remote *r, git_repository *view, json_t *names);
static int ls_connect(struct opt_sync *y, struct remote *r, git_remote **gr, const git_remote_head ***refs,
		      size_t *n);
static int ls_heads(struct opt_sync *y, struct remote *r, const git_remote_head **refs, size_t n, struct heads *h,
		    json_t *theirs);
static int ls_clashes(struct remote *r, struct heads *h, json_t *theirs);

/* libgit2's local transport lists every ref of the repository and fails
 * on the first whose name git does not accept (a file
 * collection ref x~1 put there by hand): one such ref failed every
 * fetch from that remote.  A path remote with such refs is read through
 * a view: a bare repository in our store (opt-peer.XXXXXX, removed when
 * the remote is closed; one left by a killed run goes a day later) whose
 * objects are the remote's (alternates) and whose refs are the remote's
 * collection refs that git accepts.  The collection refs left out are
 * skipped. */
static int path_view(struct opt_sync *y, struct remote *r)
{
	json_t *names = json_array();
	int odd = 0, rc;

	if (!names)
		return opt_error_set(OPT_EIO, "out of memory");
	if ((rc = path_refs(r, names, &odd)) == 0 && odd)
		rc = view_make(y, r, names);
	json_decref(names);
	return rc;
}

/* The remote's collection refs whose names git accepts into names; *odd
 * when a ref's name is not one git accepts (a collection's is skipped). */
static int path_refs(struct remote *r, json_t *names, int *odd)
{
	git_reference_iterator *it = NULL;
	const char *name, *cn;
	int valid, err, rc = 0;

	if (git_reference_iterator_new(&it, r->peer_repo) < 0)
		return sync_net_fail(r, "cannot list refs");
	while ((err = git_reference_next_name(&name, it)) == 0) {
		if (git_reference_name_is_valid(&valid, name) < 0)
			valid = 0;
		cn = opt_ref_collection_name(name);
		if (valid) {
			if (cn)
				json_array_append_new(names, json_string_nocheck(name));
			continue;
		}
		*odd = 1;
		if (!cn)
			continue;
		if (opt_store_name_check(cn) == 0)
			opt_error_set_reason(opt_error_set(OPT_EINTEGRITY, "not a valid ref name"), "malformed");
		if ((rc = sync_skip_add(r, cn, OPT_EINTEGRITY)) < 0)
			break;
	}
	git_reference_iterator_free(it);
	if (rc == 0 && err != GIT_ITEROVER)
		rc = sync_net_fail(r, "cannot list refs");
	return rc;
}

/* Make r's view beside the store: a bare repository whose objects are
 * the remote's and whose refs are names (the remote's values). */
static int view_make(struct opt_sync *y, struct remote *r, json_t *names)
{
	git_repository *view = NULL;
	git_repository_init_options io;
	char *store = NULL, *peer = NULL, alt[PATH_MAX + 64];
	int rc = 0;
	FILE *f;

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
	rc = view_fill(r, view, names);
done:
	git_repository_free(view);
	free(store);
	free(peer);
	return rc;
}

/* Each of names (a ref of the remote that is still there) into view. */
static int view_fill(struct remote *r, git_repository *view, json_t *names)
{
	size_t i;

	for (i = 0; i < json_array_size(names); i++) {
		git_reference *ref = NULL;
		git_oid id;
		const char *name = json_string_value(json_array_get(names, i));
		if (git_reference_name_to_id(&id, r->peer_repo, name) < 0) {
			git_error_clear();
			continue;
		}
		if (git_reference_create(&ref, view, name, &id, 1, "opt-sync view") < 0)
			return opt_git_fail(OPT_EIO, "cannot make a view of the remote");
		git_reference_free(ref);
	}
	return 0;
}

int sync_ls_remote(struct opt_sync *y, struct remote *r, git_remote **gr_out, struct heads *h)
{
	git_remote *gr = NULL;
	const git_remote_head **refs = NULL;
	json_t *theirs = NULL;
	size_t n = 0;
	int rc;

	*gr_out = NULL;
	if (r->path && !r->view[0] && (rc = path_view(y, r)) < 0)
		return rc;
	if ((rc = ls_connect(y, r, &gr, &refs, &n)) < 0)
		return rc;
	if (!(theirs = json_array())) {
		rc = opt_error_set(OPT_EIO, "out of memory");
		goto fail;
	}
	if ((rc = ls_heads(y, r, refs, n, h, theirs)) < 0 || (rc = ls_clashes(r, h, theirs)) < 0)
		goto fail;
	json_decref(theirs);
	*gr_out = gr;
	return 0;
fail:
	json_decref(theirs);
	git_remote_free(gr);
	return rc;
}

/* Connect to r for a fetch and list its refs (*refs, n: libgit2's, valid
 * while *gr is open). */
static int ls_connect(struct opt_sync *y, struct remote *r, git_remote **gr, const git_remote_head ***refs,
		      size_t *n)
{
	git_remote_callbacks cb;
	int rc;

	sync_callbacks(&cb, r);
	if (sync_anon_remote(gr, y->repo, r->view[0] ? r->view : r->path ? r->path : r->url) < 0)
		return sync_net_fail(r, "invalid URL");
	r->cred_tries = 0;
	/* the local transport opens the peer's repository here */
	if (r->path)
		peer_owner_check(0);
	rc = git_remote_connect(*gr, GIT_DIRECTION_FETCH, &cb, NULL, NULL);
	if (r->path)
		peer_owner_check(1);
	if (rc < 0)
		rc = sync_net_fail(r, "cannot connect");
	else if (git_remote_ls(refs, n, *gr) < 0)
		rc = sync_net_fail(r, "cannot list refs");
	if (rc < 0) {
		git_remote_free(*gr);
		*gr = NULL;
	}
	return rc;
}

/* The remote's collections into h and theirs: a name that is not valid,
 * or that clashes with one of ours, is skipped. */
static int ls_heads(struct opt_sync *y, struct remote *r, const git_remote_head **refs, size_t n, struct heads *h,
		    json_t *theirs)
{
	json_t *ours = NULL;
	const char *other;
	size_t i;
	int rc;

	if ((rc = opt_store_list(y->s, &ours)) < 0)
		return rc;
	for (i = 0; i < n; i++) {
		struct head *e;
		const char *name = opt_ref_collection_name(refs[i]->name);
		if (!name)
			continue;
		if (opt_store_name_check(name) < 0) {
			if ((rc = sync_skip_add(r, name, OPT_EINTEGRITY)) < 0)
				break;
			continue;
		}
		if ((other = clash_in(ours, name, 1))) {
			opt_error_set(OPT_ECONFLICT, "collection '%s' cannot be created: collection '%s' exists", name, other);
			if ((rc = sync_skip_add(r, name, OPT_ECONFLICT)) < 0)
				break;
			continue;
		}
		if (!(e = sync_heads_add(h, name)) || json_array_append_new(theirs, json_string(name)) < 0) {
			rc = opt_error_set(OPT_EIO, "out of memory");
			break;
		}
		e->new = refs[i]->oid;
		e->has_new = 1;
	}
	json_decref(ours);
	return rc < 0 ? rc : 0;
}

/* Two of the remote's that clash (git cannot hold both): the first stays
 * in h, the other is skipped. */
static int ls_clashes(struct remote *r, struct heads *h, json_t *theirs)
{
	const char *other;
	size_t i, k;
	int rc;

	if ((rc = sync_sort_strings(theirs)) < 0)
		return rc;
	for (i = k = 0; i < h->n; i++) {
		if ((other = clash_in(theirs, h->v[i].name, 0))) {
			opt_error_set_reason(opt_error_set(OPT_EINTEGRITY, "remote '%s' lists both '%s' and '%s', which cannot "
							   "both exist", r->name, other, h->v[i].name), "malformed");
			rc = sync_skip_add(r, h->v[i].name, OPT_EINTEGRITY);
			free(h->v[i].name);
			if (rc < 0) {
				for (i++; i < h->n; i++)
					h->v[k++] = h->v[i];
				h->n = k;
				return rc;
			}
			continue;
		}
		h->v[k++] = h->v[i];
	}
	h->n = k;
	return 0;
}
