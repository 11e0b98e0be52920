/* repo.c - the store's repository: creating, opening and finding a
 * store, collection names, the quarantine of incoming objects, reading
 * objects, listing, and gc (what every ref reaches is kept). */
#include "store.h"
#include "error.h"
#include "json.h"
#include "pack.h"
#include "store/git.h"
#include "store/internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <errno.h>
#include <git2.h>
#include <git2/sys/mempack.h>
#include <git2/sys/repository.h>
#include <git2/sys/odb_backend.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* libgit2 rescans objects/pack only when the directory's mtime (in whole
 * seconds) changed: a pack another process wrote in the same second as
 * our last scan stays invisible, and so do the objects of a ref it just
 * moved.  On a miss, open the object database afresh and look again. */
int opt_store__reload_odb(struct opt_store *s)
{
	git_odb *odb = NULL;
	char objdir[PATH_MAX];

	if (s->gpending)
		return -1;  /* pending objects live in the current one */
	snprintf(objdir, sizeof(objdir), "%s/objects", git_repository_path(s->repo));
	if (git_odb_open(&odb, objdir) < 0)
		return -1;
	if (s->qdir && opt_git_odb_add_quarantine(odb, s->qdir) < 0) {
		git_odb_free(odb);
		return -1;
	}
	if (s->gname) {
		git_odb_backend *mp = NULL;
		if (git_mempack_new(&mp) < 0 || git_odb_add_backend(odb, mp, 1000) < 0) {
			git_odb_free(odb);
			return -1;
		}
		s->mempack = mp;
		if (s->gpack)
			opt_pack_mirror(s->gpack, mp);
	} else {
		s->mempack = NULL;  /* went with the old database */
	}
	git_repository_set_odb(s->repo, odb);
	git_odb_free(s->odb);
	s->odb = odb;
	return 0;
}

int opt_store__commit_lookup(struct opt_store *s, git_commit **out, const git_oid *id)
{
	int rc = git_commit_lookup(out, s->repo, id);

	if (rc == GIT_ENOTFOUND && opt_store__reload_odb(s) == 0)
		rc = git_commit_lookup(out, s->repo, id);
	return rc;
}

int opt_store__tree_lookup(struct opt_store *s, git_tree **out, const git_oid *id)
{
	int rc = git_tree_lookup(out, s->repo, id);

	if (rc == GIT_ENOTFOUND && opt_store__reload_odb(s) == 0)
		rc = git_tree_lookup(out, s->repo, id);
	return rc;
}

int opt_store__odb_read(struct opt_store *s, git_odb_object **out, const git_oid *id)
{
	int rc = git_odb_read(out, s->odb, id);

	if (rc == GIT_ENOTFOUND && opt_store__reload_odb(s) == 0)
		rc = git_odb_read(out, s->odb, id);
	return rc;
}

/* Read object id through our pack readers (the store's, then the
 * quarantine's): OPT_ENOTFOUND for what they do not find or cannot read
 * (libgit2's word then). */
int opt_store__packr_read(struct opt_store *s, const git_oid *id, unsigned char **data, size_t *len, git_object_t *type)
{
	if (s->gpending)
		return OPT_ENOTFOUND;  /* pending objects live in the mempack */
	if (!s->packr && !s->nopackr) {
		char objdir[PATH_MAX];
		snprintf(objdir, sizeof(objdir), "%s/objects", git_repository_path(s->repo));
		if (opt_packr_new(&s->packr, objdir) < 0)
			s->nopackr = 1;
	}
	if (s->packr && opt_packr_read(s->packr, id, data, len, type) == 0)
		return 0;
	if (s->qpackr && opt_packr_read(s->qpackr, id, data, len, type) == 0)
		return 0;
	return OPT_ENOTFOUND;
}

/* Read object id: *data (malloc'd, NUL-terminated) and *len.  Our pack
 * reader first (several times faster than git_odb_read on a leaf: no
 * zlib stream set-up, libdeflate); libgit2 for what it does not find or
 * cannot read (loose and pending objects, damage: libgit2's own word). */
int opt_store__read(struct opt_store *s, const git_oid *id, unsigned char **data, size_t *len)
{
	git_odb_object *obj = NULL;
	git_object_t type;

	*data = NULL;
	if (opt_store__packr_read(s, id, data, len, &type) == 0)
		return 0;
	{
		/* the size first: an object larger than any block is refused
		 * unread */
		size_t size;
		git_object_t t;
		if (git_odb_read_header(&size, &t, s->odb, id) == 0 && size > OPT_BLOCK_MAX) {
			char hex[GIT_OID_HEXSZ + 1];
			git_oid_tostr(hex, sizeof(hex), id);
			return opt_error_set(OPT_EINTEGRITY, "cannot read block: object %s has %zu bytes, more than a "
					     "block may have (%zu bytes): refused unread", hex, size, OPT_BLOCK_MAX);
		}
		git_error_clear();
	}
	if (opt_store__odb_read(s, &obj, id) < 0)
		return opt_git_fail(OPT_EINTEGRITY, "cannot read block");
	*len = git_odb_object_size(obj);
	*data = malloc(*len + 1);
	if (!*data) {
		git_odb_object_free(obj);
		return opt_error_oom();
	}
	memcpy(*data, git_odb_object_data(obj), *len);
	(*data)[*len] = '\0';
	git_odb_object_free(obj);
	return 0;
}

/* Read object id (of any kind) raw: *data malloc'd, *type. */
int opt_store__read_typed(struct opt_store *s, const git_oid *id, unsigned char **data, size_t *len, git_object_t *type)
{
	git_odb_object *obj = NULL;

	*data = NULL;
	if (opt_store__packr_read(s, id, data, len, type) == 0)
		return 0;
	if (opt_store__odb_read(s, &obj, id) < 0) {
		git_error_clear();
		return OPT_ENOTFOUND;
	}
	*len = git_odb_object_size(obj);
	*type = git_odb_object_type(obj);
	*data = malloc(*len + 1);
	if (!*data) {
		git_odb_object_free(obj);
		return opt_error_oom();
	}
	memcpy(*data, git_odb_object_data(obj), *len);
	(*data)[*len] = '\0';
	git_odb_object_free(obj);
	return 0;
}

static int global_init(void)
{
	static int done;
	const char *fs;

	if (done)
		return 0;
	if (git_libgit2_init() < 0)
		return opt_git_fail(OPT_EIO, "cannot initialise libgit2");
	if (opt_util_init() < 0)
		return OPT_EIO;
	(void)fs;
	git_libgit2_opts(GIT_OPT_ENABLE_FSYNC_GITDIR, opt_pack_fsync_enabled());
	git_libgit2_opts(GIT_OPT_ENABLE_STRICT_OBJECT_CREATION, 0);
	/* reads need not re-hash every object: opt-log verify checks content
	 * against the log's SHA-256 hashes, git fsck checks the objects */
	git_libgit2_opts(GIT_OPT_ENABLE_STRICT_HASH_VERIFICATION, 0);
	git_libgit2_opts(GIT_OPT_SET_CACHE_OBJECT_LIMIT, GIT_OBJECT_TREE, (size_t)1 << 20);
	git_libgit2_opts(GIT_OPT_SET_CACHE_OBJECT_LIMIT, GIT_OBJECT_COMMIT, (size_t)1 << 16);
	git_libgit2_opts(GIT_OPT_SET_CACHE_OBJECT_LIMIT, GIT_OBJECT_BLOB, (size_t)0);
	/* libgit2 maps a pack in windows (of 1 GB by default: every pack
	 * whole) whose pages stay resident around every object it reads:
	 * windows of 1 MB keep what a put reads near what it uses */
	git_libgit2_opts(GIT_OPT_SET_MWINDOW_SIZE, (size_t)1 << 20);
	done = 1;
	return 0;
}

/* What is wrong with name as a collection name (a static text, or the
 * character in bad), or NULL when nothing is. */
static const char *name_problem(const char *name, char bad[8])
{
	size_t n, start = 0, i;

	if (!name || !*name)
		return "it is empty";
	n = strlen(name);
	if (n > OPT_NAME_MAX)
		return "longer than 200 characters";
	for (i = 0; i <= n; i++) {
		char c = name[i];
		if (c == '/' || c == '\0') {
			size_t len = i - start;
			if (len == 0)
				return "an empty component";
			if (name[start] == '.')
				return "a component begins with '.'";
			if (name[start] == '-')
				return "a component begins with '-'";
			if (len >= 5 && strncmp(name + i - 5, ".lock", 5) == 0)
				return "a component ends with '.lock'";
			if (name[i - 1] == '.')
				return "a component ends with '.'";
			start = i + 1;
			continue;
		}
		if (c == '.' && name[i + 1] == '.')
			return "'..' is not allowed";
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
		      c == '_' || c == '-')) {
			char one[2] = { c, 0 };
			snprintf(bad, 8, "%s", opt_esc(one));
			return NULL;
		}
	}
	return NULL;
}

int opt_store_name_check(const char *name)
{
	char bad[8] = "";
	const char *why = name_problem(name, bad);
	const char *esc;

	if (!why && !bad[0])
		return 0;
	esc = opt_esc(name ? name : "");
	if (why)
		return opt_error_set(OPT_EINVAL, "invalid collection name '%s': %s", esc, why);
	return opt_error_set(OPT_EINVAL, "invalid collection name '%s': '%s' is not allowed (use letters, digits, "
			     "'.', '_', '-' and '/')", esc, bad);
}

int opt_store_name_valid(const char *name)
{
	char bad[8] = "";

	return !name_problem(name, bad) && !bad[0];
}

void opt_collection_header_id(const char *name, char out[OPT_ID_LEN + 1])
{
	static const char pre[] = "optimystic collection ";
	char hex[OPT_SHA256_HEX + 1];
	uint8_t raw[OPT_ID_BYTES];
	struct opt_sha256 h;
	size_t i;

	opt_sha256_init(&h);
	opt_sha256_update(&h, pre, sizeof(pre) - 1);
	if (name)
		opt_sha256_update(&h, name, strlen(name));
	opt_sha256_final_hex(&h, hex);
	for (i = 0; i < OPT_ID_BYTES; i++) {
		int hi = hex[2 * i], lo = hex[2 * i + 1];
		hi = hi <= '9' ? hi - '0' : hi - 'a' + 10;
		lo = lo <= '9' ? lo - '0' : lo - 'a' + 10;
		raw[i] = (uint8_t)(hi << 4 | lo);
	}
	opt_base32_encode(out, raw, sizeof(raw));
}

static int dir_is_empty(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int empty = 1;

	if (!d)
		return errno == ENOENT;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			empty = 0;
			break;
		}
	closedir(d);
	return empty;
}

/* 1 if repo's HEAD names a store's first commit (the empty tree, the
 * message root_commit writes): a copy of a store by plain git (git clone
 * --mirror, git clone --bare of HEAD and refs/opt/) that did not copy the
 * configuration. */
static int head_is_store_root(git_repository *repo)
{
	git_commit *c = NULL;
	git_oid id;
	int ok;

	if (!git_repository_head_detached(repo) || git_reference_name_to_id(&id, repo, "HEAD") < 0 ||
	    git_commit_lookup(&c, repo, &id) < 0) {
		git_error_clear();
		return 0;
	}
	ok = git_commit_parentcount(c) == 0 && strncmp(git_commit_message_raw(c), "optimystic store\n", 17) == 0 &&
	     strcmp(git_oid_tostr_s(git_commit_tree_id(c)), "4b825dc642cb6eb9a060e54bf8d69288fbee4904") == 0;
	git_commit_free(c);
	return ok;
}

/* A copy by plain git becomes a store again: the configuration a store
 * is made with (store_init_at).  Best effort: a copy we may not write is
 * still read. */
static void adopt_copy(git_repository *repo)
{
	git_config *cfg = NULL;

	if (git_repository_config(&cfg, repo) == 0) {
		if (git_config_set_int32(cfg, "optimystic.version", 1) == 0) {
			git_config_set_bool(cfg, "core.logallrefupdates", 0);
			git_config_set_int32(cfg, "gc.auto", 0);
		}
	}
	git_config_free(cfg);
	git_error_clear();
}

/* Refuse repositories we must not write: another object format, or a
 * repository that is not one of ours. */
static int check_repo(git_repository *repo, const char *dir)
{
	git_config *cfg = NULL;
	const char *fmt_s = NULL;
	git_buf buf = { 0 };
	int32_t ver = 0;
	int rc = 0;

	if (git_repository_config_snapshot(&cfg, repo) < 0)
		return opt_git_fail(OPT_EIO, "cannot read store configuration");
	if (git_config_get_string_buf(&buf, cfg, "extensions.objectformat") == 0) {
		fmt_s = buf.ptr;
		if (fmt_s && strcasecmp(fmt_s, "sha1") != 0) {
			rc = opt_error_set(OPT_EINVAL, "'%s' is a git repository with object format %s, not an optimystic store",
					   dir, fmt_s);
			goto done;
		}
	}
	git_error_clear();
	if (git_config_get_int32(&ver, cfg, "optimystic.version") < 0) {
		git_error_clear();
		if (git_repository_is_bare(repo) && head_is_store_root(repo)) {
			adopt_copy(repo);
			ver = 1;
		} else {
			rc = opt_error_set(OPT_EINVAL, "'%s' is not an optimystic store (a git repository without "
					   "optimystic.version)", dir);
			goto done;
		}
	}
	if (ver != 1)
		rc = opt_error_set(OPT_EINVAL, "store '%s' has version %d; this program knows version 1", dir, (int)ver);
	if (rc == 0 && !git_repository_is_bare(repo))
		rc = opt_error_set(OPT_EINVAL, "'%s' is not an optimystic store (not a bare repository)", dir);
done:
	git_buf_dispose(&buf);
	git_config_free(cfg);
	return rc;
}

static int store_wrap(struct opt_store **out, git_repository *repo, const char *dir)
{
	struct opt_store *s = calloc(1, sizeof(*s));

	if (!s) {
		git_repository_free(repo);
		return opt_error_oom();
	}
	s->repo = repo;
	s->path = strdup(dir);
	if (!s->path || git_repository_odb(&s->odb, repo) < 0) {
		opt_store_free(s);
		return opt_error_set(OPT_EIO, "cannot open object database of '%s'", dir);
	}
	*out = s;
	return 0;
}

int opt_store_open(struct opt_store **out, const char *dir)
{
	git_repository *repo = NULL;
	struct stat st;
	char head[PATH_MAX];
	int rc;

	*out = NULL;
	if ((rc = global_init()) < 0)
		return rc;
	if (stat(dir, &st) < 0) {
		if (errno == ENOENT)
			return opt_error_set(OPT_ENOTFOUND, "cannot open store '%s': no such directory", opt_esc(dir));
		return opt_error_set(OPT_EIO, "cannot open store '%s': %s", opt_esc(dir), strerror(errno));
	}
	if (!S_ISDIR(st.st_mode))
		return opt_error_set(OPT_EINVAL, "cannot open store '%s': not a directory", opt_esc(dir));
	snprintf(head, sizeof(head), "%s/HEAD", dir);
	if (access(head, F_OK) < 0) {
		if (errno == EACCES)
			return opt_error_set(OPT_EIO, "cannot open store '%s': permission denied", opt_esc(dir));
		return opt_error_set(OPT_EINVAL, "'%s' is not an optimystic store", opt_esc(dir));
	}
	{
		/* look at the object format before libgit2 does anything with
		 * the repository: 1.5 would write SHA-1 objects into a SHA-256
		 * one */
		git_config *cfg = NULL;
		git_buf fmt = { 0 };
		char cpath[PATH_MAX];
		snprintf(cpath, sizeof(cpath), "%s/config", dir);
		if (git_config_open_ondisk(&cfg, cpath) == 0 &&
		    git_config_get_string_buf(&fmt, cfg, "extensions.objectformat") == 0 &&
		    fmt.ptr && strcasecmp(fmt.ptr, "sha1") != 0) {
			rc = opt_error_set(OPT_EINVAL, "'%s' is a git repository with object format %s, not an optimystic store",
					   dir, fmt.ptr);
			git_buf_dispose(&fmt);
			git_config_free(cfg);
			return rc;
		}
		git_buf_dispose(&fmt);
		git_config_free(cfg);
		git_error_clear();
	}
	if ((rc = git_repository_open_ext(&repo, dir, GIT_REPOSITORY_OPEN_NO_SEARCH | GIT_REPOSITORY_OPEN_BARE, NULL)) < 0) {
		const git_error *e = git_error_last();
		/* libgit2 1.5 fails the check with GIT_ENOTFOUND and "config
		 * value 'safe.directory' was not found" when no config has
		 * one */
		if (rc == GIT_EOWNER || (st.st_uid != geteuid() && e && e->message && strstr(e->message, "safe.directory"))) {
			/* as git: a repository of another user may carry
			 * settings made to run as whoever opens it, and what
			 * we write there would belong to us */
			git_error_clear();
			return opt_error_set(OPT_EIO, "cannot open store '%s': it belongs to another user (uid %ld); as git "
					     "does, it is opened only when git's safe.directory names it "
					     "(git config --global --add safe.directory %s)", dir, (long)st.st_uid, dir);
		}
		if (access(dir, R_OK | X_OK) < 0)
			return opt_error_set(OPT_EIO, "cannot open store '%s': %s", opt_esc(dir), strerror(errno));
		return opt_git_fail(OPT_EINVAL, "not an optimystic store");
	}
	if ((rc = check_repo(repo, dir)) < 0) {
		git_repository_free(repo);
		return rc;
	}
	return store_wrap(out, repo, dir);
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void remove_tree(const char *dir)
{
	nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* The message of a store's first commit, which HEAD names: what plain
 * git log in a store shows (the collections are refs outside HEAD's
 * history). */
static const char root_message[] =
	"optimystic store\n"
	"\n"
	"This git repository is an optimystic store (see opt(7)). Its\n"
	"collections are the refs %sNAME, one commit per\n"
	"revision; HEAD names only this commit. To see them:\n"
	"\n"
	"    git log --all --oneline\n"
	"    git log %sNAME\n"
	"    opt-block stat\n";

/* Point HEAD (detached) at a commit of an empty tree saying what the
 * store is, so that plain git log in it works: a branch would be one more
 * ref beside the collections, and HEAD must name a branch under
 * refs/heads/ or a commit for git fsck --strict.  The two objects go in a
 * pack of their own, as every object of a store does. */
static int root_commit(git_repository *repo)
{
	char objdir[PATH_MAX], prefix[OPT_REF_MAX];
	char buf[1024], msg[sizeof(root_message) + 2 * OPT_REF_MAX];
	struct opt_pack *p = NULL;
	git_oid tree_id, commit_id;
	int n, rc;

	snprintf(objdir, sizeof(objdir), "%sobjects", git_repository_path(repo));  /* path ends in / */
	if ((rc = opt_pack_new(&p)) < 0)
		return rc;
	if ((rc = opt_pack_add(p, GIT_OBJECT_TREE, "", 0, &tree_id)) < 0)
		goto done;
	opt_ref_collection(prefix, sizeof(prefix), NULL);
	snprintf(msg, sizeof(msg), root_message, prefix, prefix);
	n = snprintf(buf, sizeof(buf), "tree %s\nauthor optimystic <optimystic@localhost> %lld +0000\n"
		     "committer optimystic <optimystic@localhost> %lld +0000\n\n%s",
		     git_oid_tostr_s(&tree_id), (long long)time(NULL), (long long)time(NULL), msg);
	if (n < 0 || (size_t)n >= sizeof(buf)) {
		rc = opt_error_set(OPT_EIO, "cannot write the store's first commit");
		goto done;
	}
	if ((rc = opt_pack_add(p, GIT_OBJECT_COMMIT, buf, (size_t)n, &commit_id)) < 0 ||
	    (rc = opt_pack_write(p, NULL, objdir)) < 0)
		goto done;
	if (git_repository_set_head_detached(repo, &commit_id) < 0)
		rc = opt_git_fail(OPT_EIO, "cannot point the store's HEAD at its first commit");
done:
	opt_pack_free(p);
	return rc;
}

/* Make a new store at dir (which must not exist). */
static int store_init_at(const char *dir)
{
	git_repository *repo = NULL;
	git_repository_init_options o;
	git_config *cfg = NULL;
	int rc = 0;

	git_repository_init_options_init(&o, GIT_REPOSITORY_INIT_OPTIONS_VERSION);
	o.flags = GIT_REPOSITORY_INIT_BARE | GIT_REPOSITORY_INIT_MKPATH | GIT_REPOSITORY_INIT_NO_REINIT;
	o.initial_head = "opt";
	if (git_repository_init_ext(&repo, dir, &o) < 0)
		return opt_git_fail(OPT_EIO, "cannot create store");
	if (git_repository_config(&cfg, repo) < 0 ||
	    git_config_set_int32(cfg, "optimystic.version", 1) < 0 ||
	    git_config_set_bool(cfg, "core.logallrefupdates", 0) < 0 ||
	    git_config_set_int32(cfg, "gc.auto", 0) < 0)
		rc = opt_git_fail(OPT_EIO, "cannot configure store");
	if (rc == 0)
		rc = root_commit(repo);
	git_config_free(cfg);
	git_repository_free(repo);
	return rc;
}

int opt_store_create(struct opt_store **out, const char *dir, int *created)
{
	char head[PATH_MAX], tmp[PATH_MAX];
	size_t n;
	int rc, err, i;

	*out = NULL;
	if (created)
		*created = 0;
	if ((rc = global_init()) < 0)
		return rc;
	snprintf(head, sizeof(head), "%s/HEAD", dir);
	if (access(head, F_OK) == 0)
		return opt_store_open(out, dir);
	if (!dir_is_empty(dir))
		return opt_error_set(OPT_EINVAL, "cannot create store '%s': directory exists and is not empty", dir);
	/* build the store beside its place and rename it there, so that two
	 * processes creating it at once end with one whole store */
	n = strlen(dir);
	while (n > 1 && dir[n - 1] == '/')
		n--;
	snprintf(tmp, sizeof(tmp), "%.*s.opt-init.%ld", (int)n, dir, (long)getpid());
	remove_tree(tmp);
	if ((rc = store_init_at(tmp)) < 0) {
		remove_tree(tmp);
		return rc;
	}
	if (rename(tmp, dir) == 0) {
		if (created)
			*created = 1;
		return opt_store_open(out, dir);
	}
	err = errno;
	remove_tree(tmp);
	if (err != ENOTEMPTY && err != EEXIST)
		return opt_error_set(OPT_EIO, "cannot create store '%s': %s", dir, strerror(err));
	/* another process made it first: use theirs */
	for (i = 0; i < 50; i++) {
		rc = opt_store_open(out, dir);
		if (rc != OPT_EINVAL)
			return rc;
		opt_sleep_ms(10);
	}
	return rc;
}

int opt_store_discover(char **path, const char *start)
{
	char cur[PATH_MAX], cand[PATH_MAX + 8];
	struct stat st;

	*path = NULL;
	if (!realpath(start ? start : ".", cur))
		return opt_error_set(OPT_EIO, "cannot resolve '%s': %s", start ? start : ".", strerror(errno));
	for (;;) {
		char *slash;
		snprintf(cand, sizeof(cand), "%s/%s", strcmp(cur, "/") ? cur : "", OPT_STORE_DIRNAME);
		if (stat(cand, &st) == 0 && S_ISDIR(st.st_mode)) {
			*path = strdup(cand);
			return *path ? 0 : opt_error_oom();
		}
		if (strcmp(cur, "/") == 0)
			break;
		slash = strrchr(cur, '/');
		if (slash == cur)
			cur[1] = '\0';
		else
			*slash = '\0';
	}
	return opt_error_set(OPT_ENOTFOUND, "no store found (no %s directory here or above; use --store DIR or opt-block init)",
			     OPT_STORE_DIRNAME);
}

static void quarantine_drop(struct opt_store *s);

void opt_store_free(struct opt_store *s)
{
	if (!s)
		return;
	opt_store_group_end(s);
	quarantine_drop(s);
	json_decref(s->ocache);
	free(s->oring);
	git_odb_free(s->odb);
	git_repository_free(s->repo);
	opt_packr_free(s->packr);
	free(s->path);
	free(s);
}

git_repository *opt_store__repo(struct opt_store *s)
{
	return s->repo;
}

int opt_store__open_bare(const char *dir, git_repository **out)
{
	*out = NULL;
	if (git_repository_open_ext(out, dir, GIT_REPOSITORY_OPEN_NO_SEARCH | GIT_REPOSITORY_OPEN_BARE, NULL) < 0)
		return opt_git_fail(OPT_EIO, "cannot open store");
	return 0;
}

int opt_store__repo_open(struct opt_store *s, git_repository **out)
{
	return opt_store__open_bare(s->path, out);
}

const char *opt_store_path(const struct opt_store *s)
{
	return s->path;
}

/* ---- the quarantine of incoming objects ---- */

/* Stop reading the quarantine (its backend stays in the object database
 * until the next opt_store__reload_odb) and remove it if it is ours. */
static void quarantine_drop(struct opt_store *s)
{
	if (!s->qdir)
		return;
	opt_packr_free(s->qpackr);
	s->qpackr = NULL;
	if (s->qowner)
		remove_tree(s->qdir);
	free(s->qdir);
	s->qdir = NULL;
	s->qowner = 0;
}

static int quarantine_open(struct opt_store *s)
{
	if (opt_store__reload_odb(s) < 0)
		return opt_git_fail(OPT_EIO, "cannot open the quarantine of incoming objects");
	if (opt_packr_new(&s->qpackr, s->qdir) < 0)
		s->qpackr = NULL;  /* (libgit2 reads them) */
	return 0;
}

int opt_store_quarantine_begin(struct opt_store *s)
{
	char dir[PATH_MAX], pack[PATH_MAX + 8];
	int rc;

	if (s->qdir)
		return opt_error_set(OPT_EINVAL, "store '%s' has a quarantine open already", s->path);
	snprintf(dir, sizeof(dir), "%sobjects/" OPT_QUARANTINE_DIR_PREFIX "%ld-XXXXXX", git_repository_path(s->repo),
		 (long)getpid());
	if (!mkdtemp(dir))
		return opt_error_set(OPT_EIO, "cannot make a quarantine for incoming objects in '%s': %s", s->path,
				     strerror(errno));
	snprintf(pack, sizeof(pack), "%s/pack", dir);
	if (mkdir(pack, 0755) < 0 || !(s->qdir = strdup(dir))) {
		rc = opt_error_set(OPT_EIO, "cannot make a quarantine for incoming objects in '%s': %s", s->path,
				   strerror(errno ? errno : ENOMEM));
		remove_tree(dir);
		return rc;
	}
	s->qowner = 1;
	if ((rc = quarantine_open(s)) < 0)
		opt_store_quarantine_end(s, 0);
	return rc;
}

int opt_store_quarantine_use(struct opt_store *s, const char *dir)
{
	if (s->qdir)
		return opt_error_set(OPT_EINVAL, "store '%s' has a quarantine open already", s->path);
	if (!(s->qdir = strdup(dir)))
		return opt_error_oom();
	s->qowner = 0;
	return quarantine_open(s);
}

const char *opt_store_quarantine_dir(const struct opt_store *s)
{
	return s->qdir;
}

static int has_suffix(const char *name, const char *suffix)
{
	size_t n = strlen(name), k = strlen(suffix);

	return n > k && strcmp(name + n - k, suffix) == 0;
}

/* Move the quarantine's packs into the store: each pack (and its .rev)
 * first, then its index, which makes it visible; then the directory is
 * synced. */
static int quarantine_migrate(struct opt_store *s)
{
	char from[PATH_MAX + 300], to[PATH_MAX + 300], qpack[PATH_MAX], pack[PATH_MAX];
	static const char *const order[] = { ".pack", ".rev", ".idx" };
	struct dirent *de;
	size_t k;
	DIR *d;
	int rc = 0;

	snprintf(qpack, sizeof(qpack), "%s/pack", s->qdir);
	snprintf(pack, sizeof(pack), "%sobjects/pack", git_repository_path(s->repo));
	for (k = 0; k < sizeof(order) / sizeof(*order) && rc == 0; k++) {
		if (!(d = opendir(qpack)))
			return opt_error_set(OPT_EIO, "cannot read the quarantine '%s': %s", qpack, strerror(errno));
		while (rc == 0 && (de = readdir(d))) {
			if (strncmp(de->d_name, "pack-", 5) != 0 || !has_suffix(de->d_name, order[k]))
				continue;
			snprintf(from, sizeof(from), "%s/%s", qpack, de->d_name);
			snprintf(to, sizeof(to), "%s/%s", pack, de->d_name);
			if (rename(from, to) < 0)
				rc = opt_error_set(OPT_EIO, "cannot move incoming objects into the store ('%s'): %s", to,
						   strerror(errno));
		}
		closedir(d);
	}
	if (rc == 0 && opt_pack_fsync_enabled()) {
		int fd = open(pack, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0 || fsync(fd) < 0)
			rc = opt_error_set(OPT_EIO, "cannot sync '%s': %s", pack, strerror(errno));
		if (fd >= 0)
			close(fd);
	}
	return rc;
}

int opt_store_quarantine_end(struct opt_store *s, int keep)
{
	int rc = 0;

	if (!s->qdir)
		return 0;
	if (keep && s->qowner)
		rc = quarantine_migrate(s);
	quarantine_drop(s);
	if (opt_store__reload_odb(s) < 0 && rc == 0)
		rc = opt_git_fail(OPT_EIO, "cannot open object database");
	return rc;
}

static int cmp_json_str(const void *a, const void *b)
{
	return strcmp(json_string_value(*(json_t *const *)a), json_string_value(*(json_t *const *)b));
}

static int list_cb(const char *name, const git_oid *id, void *arg)
{
	(void)id;
	json_array_append_new(arg, json_string(opt_ref_collection_name(name)));
	return 0;
}

int opt_store_list(struct opt_store *s, json_t **out)
{
	char prefix[OPT_REF_MAX];
	json_t *arr = json_array();
	json_t **v = NULL;
	size_t n, i;
	int rc;

	*out = NULL;
	OPT_CHECK_ALLOC(arr);
	opt_ref_collection(prefix, sizeof(prefix), NULL);
	if ((rc = opt_ref_foreach(s->repo, prefix, list_cb, arr, "cannot list collections")) < 0) {
		json_decref(arr);
		return rc;
	}
	n = json_array_size(arr);
	v = malloc((n ? n : 1) * sizeof(*v));
	if (!v) {
		json_decref(arr);
		return opt_error_oom();
	}
	for (i = 0; i < n; i++)
		v[i] = json_incref(json_array_get(arr, i));
	qsort(v, n, sizeof(*v), cmp_json_str);
	json_array_clear(arr);
	for (i = 0; i < n; i++)
		json_array_append_new(arr, v[i]);
	free(v);
	*out = arr;
	return 0;
}

int opt_store_stats(struct opt_store *s, json_t **out)
{
	size_t packs = 0, objects = 0, bytes = 0;
	int rc = opt_pack_stats(s->repo, &packs, &objects, &bytes);

	*out = NULL;
	if (rc < 0)
		return rc;
	*out = json_pack("{s:I,s:I,s:I}", "packs", (json_int_t)packs, "objects", (json_int_t)objects,
			 "pack_bytes", (json_int_t)bytes);
	return *out ? 0 : opt_error_oom();
}

int opt_store_repack(struct opt_store *s)
{
	return opt_pack_consolidate(s->repo, 1);
}


/* ---- gc ---- */

struct reach {
	struct opt_store *s;
	struct opt_oidset seen;
	git_oid *stack;
	size_t n, cap;
};

static int reach_push(struct reach *r, const git_oid *id)
{
	int rc;

	if (opt_oidset_has(&r->seen, id))
		return 0;
	if ((rc = OPT_ALLOC_GROW(r->stack, r->n + 1, r->cap)) < 0)
		return rc;
	r->stack[r->n++] = *id;
	return 0;
}

/* Mark every object ref's value reaches (commits, their parents, trees
 * and what they hold). */
static int reach_walk(struct reach *r, const char *ref, const git_oid *start)
{
	int rc;

	if ((rc = reach_push(r, start)) < 0)
		return rc;
	while (r->n > 0) {
		git_oid id = r->stack[--r->n], sub;
		unsigned char *data = NULL;
		size_t len;
		git_object_t type;
		char hex[GIT_OID_HEXSZ + 1];

		if ((rc = opt_oidset_add(&r->seen, &id)) <= 0) {
			if (rc < 0)
				return rc;
			continue;
		}
		if ((rc = opt_store__read_typed(r->s, &id, &data, &len, &type)) < 0) {
			if (rc != OPT_ENOTFOUND)
				return rc;
			git_oid_tostr(hex, sizeof(hex), &id);
			return opt_error_set(OPT_EINTEGRITY, "object %s, which ref '%s' reaches, is missing", hex, ref);
		}
		if (type == GIT_OBJECT_COMMIT || type == GIT_OBJECT_TAG) {
			const char *p = (const char *)data, *end = p + len;
			while (rc == 0 && p < end && *p != '\n') {
				const char *nl = memchr(p, '\n', (size_t)(end - p));
				size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
				if (((n == 45 && strncmp(p, "tree ", 5) == 0) || (n == 47 && strncmp(p, "parent ", 7) == 0) ||
				     (n == 47 && strncmp(p, "object ", 7) == 0)) &&
				    git_oid_fromstrn(&sub, p + n - 40, 40) == 0)
					rc = reach_push(r, &sub);
				p = nl ? nl + 1 : end;
			}
		} else if (type == GIT_OBJECT_TREE) {
			const unsigned char *p = data, *end = data + len;
			struct tent e;
			while (rc == 0 && opt_store__tree_next(&p, end, &e) == 1) {
				memcpy(sub.id, e.oid, 20);
				if (opt_store__mode_is(&e, "40000") || opt_store__mode_is(&e, "040000"))
					rc = reach_push(r, &sub);
				else if (!opt_store__mode_is(&e, "160000"))  /* (a submodule's commit is not here) */
					rc = opt_oidset_add(&r->seen, &sub) < 0 ? OPT_EIO : 0;
			}
		}
		free(data);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* The incoming refs of a killed fetch name objects of its quarantine,
 * which gc removed: drop them (unless a quarantine is left: a fetch may
 * be running). */
static int drop_cb(const char *name, const git_oid *id, void *arg)
{
	struct opt_store *s = arg;

	if (!git_odb_exists(s->odb, id) && opt_ref_cas(s->repo, name, OPT_REF_ANY, NULL, NULL, 0) < 0)
		return opt_git_fail(OPT_EIO, "cannot remove a stale incoming ref");
	return 0;
}

static int drop_stale_incoming(struct opt_store *s)
{
	char objdir[PATH_MAX], prefix[OPT_REF_MAX];
	struct dirent *de;
	DIR *d;
	int rc = 0;

	snprintf(objdir, sizeof(objdir), "%sobjects", git_repository_path(s->repo));
	if (!(d = opendir(objdir)))
		return 0;
	while ((de = readdir(d)))
		if (strncmp(de->d_name, OPT_QUARANTINE_DIR_PREFIX, strlen(OPT_QUARANTINE_DIR_PREFIX)) == 0)
			rc = 1;
	closedir(d);
	if (rc)
		return 0;
	opt_ref_incoming(prefix, sizeof(prefix), NULL, NULL);
	return opt_ref_foreach(s->repo, prefix, drop_cb, s, "cannot list refs");
}

/* every ref's objects, but those of incoming refs (quarantined objects,
 * not the store's) */
static int reach_ref(const char *name, const git_oid *id, void *arg)
{
	char prefix[OPT_REF_MAX];

	opt_ref_incoming(prefix, sizeof(prefix), NULL, NULL);
	return opt_ref_under(name, prefix) ? 0 : reach_walk(arg, name, id);
}

static int reach_has(const git_oid *id, void *arg)
{
	return opt_oidset_has(&((struct reach *)arg)->seen, id);
}

int opt_store_gc(struct opt_store *s, long long prune_age, struct opt_gc_result *res)
{
	struct reach r;
	struct opt_pack_gc g;
	struct opt_pack_gc_result pr;
	const char *e = getenv("OPT_BUSY_TIMEOUT");
	int lockfd = -1, rc;

	memset(res, 0, sizeof(*res));
	memset(&r, 0, sizeof(r));
	r.s = s;
	if ((rc = opt_pack_lock(s->repo, e && *e ? atol(e) : 30000, &lockfd)) < 0)
		return rc;
	/* every ref's objects (incoming refs name quarantined objects,
	 * which are not the store's) */
	if ((rc = opt_ref_foreach(s->repo, NULL, reach_ref, &r, "cannot list refs")) < 0)
		goto done;
	/* and HEAD, which names the store's first commit (not a ref the
	 * iterator lists) */
	{
		git_oid head;
		if (opt_ref_read(s->repo, "HEAD", &head) == 1 && (rc = reach_walk(&r, "HEAD", &head)) < 0)
			goto done;
	}
	git_error_clear();
	memset(&g, 0, sizeof(g));
	g.reachable = reach_has;
	g.arg = &r;
	g.now = (int64_t)time(NULL);
	g.expire = prune_age < 0 ? INT64_MIN : g.now - (int64_t)prune_age;
	if (prune_age == 0)
		g.expire = INT64_MAX;  /* now: every unreachable object */
	if ((rc = opt_pack_gc(s->repo, &g, &pr)) < 0)
		goto done;
	res->pruned = pr.pruned;
	res->unreachable = pr.unreachable;
	res->temporary = pr.temporary;
	opt_store__reload_odb(s);
	rc = drop_stale_incoming(s);
done:
	opt_pack_unlock(lockfd);
	opt_oidset_clear(&r.seen);
	free(r.stack);
	return rc;
}

/* ---- libgit2 helpers the store and the sync family share ---- */

int opt_git_fail(int code, const char *what)
{
	const git_error *e = git_error_last();

	return opt_error_set(code, "%s: %s", what, e && e->message ? e->message : "unknown libgit2 error");
}

int opt_git_odb_add_quarantine(git_odb *odb, const char *qdir)
{
	git_odb_backend *pk = NULL;

	/* (the store's packs have priority 2, its loose objects 1; writes
	 * of loose objects still go to the store: a fetch writes a pack) */
	if (git_odb_backend_pack(&pk, qdir) < 0)
		return opt_git_fail(OPT_EIO, "cannot open the quarantine of incoming objects");
	if (git_odb_add_backend(odb, pk, 4) < 0) {
		pk->free(pk);
		return opt_git_fail(OPT_EIO, "cannot open the quarantine of incoming objects");
	}
	return 0;
}
