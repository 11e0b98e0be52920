#include "store.h"
#include "error.h"
#include "gitutil.h"
#include "json.h"
#include "pack.h"

#include <dirent.h>
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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define REF_PREFIX "refs/opt/collections/"
#define CACHE_SLOTS 64      /* default: streaming reads stay small */

struct opt_store {
	git_repository *repo;
	git_odb *odb;
	char *path;
	/* group commit */
	git_odb_backend *mempack;  /* serves pending objects (owned by odb) */
	struct opt_pack *gpack;    /* pending objects, NULL outside a group */
	char *gname;               /* the group's collection */
	int gpending;              /* 1 once a commit is pending */
	int gcreate;               /* the group creates the collection */
	git_oid gbase, ghead;      /* ref value at the start; pending head */
	/* parsed blocks by blob ID (content-addressed, so valid in every
	 * snapshot): a stream of transactions reads what the one before wrote
	 * without parsing it again */
	json_t *ocache;
	char (*oring)[GIT_OID_HEXSZ + 1];
	size_t opos;
	/* our own reader of the packs (block reads), made at the first read;
	 * libgit2 reads what it does not hold */
	struct opt_packr *packr;
	int nopackr;
};

#define OCACHE 256

static json_t *ocache_get(struct opt_store *s, const git_oid *oid)
{
	char hex[GIT_OID_HEXSZ + 1];

	if (!s->ocache)
		return NULL;
	git_oid_tostr(hex, sizeof(hex), oid);
	return json_object_get(s->ocache, hex);
}

static void ocache_put(struct opt_store *s, const git_oid *oid, const json_t *b)
{
	char *slot;

	if (!s->ocache) {
		s->ocache = json_object();
		s->oring = calloc(OCACHE, sizeof(*s->oring));
		if (!s->ocache || !s->oring) {
			json_decref(s->ocache);
			free(s->oring);
			s->ocache = NULL;
			s->oring = NULL;
			return;
		}
	}
	slot = s->oring[s->opos++ % OCACHE];
	if (slot[0])
		json_object_del(s->ocache, slot);
	git_oid_tostr(slot, GIT_OID_HEXSZ + 1, oid);
	json_object_set(s->ocache, slot, (json_t *)b);
}

struct cache_slot {
	char *id;
	json_t *block;
};

/* A map from block IDs to records that hold their ID (open addressing,
 * linear probing): the lookups of a point read want it cheaper than a
 * JSON object's. */
struct idmap_ent {
	size_t h;
	const char *id;   /* the record's own; NULL: free */
	void *v;
};

struct idmap {
	struct idmap_ent *t;
	size_t cap, n;
};

static size_t id_hash(const char *id)
{
	size_t n = strlen(id), i;
	uint64_t h = 0x9e3779b97f4a7c15u ^ n, w;

	/* eight bytes at a time, mixed as splitmix64 does */
	for (i = 0; i < n; i += 8) {
		w = 0;
		memcpy(&w, id + i, n - i < 8 ? n - i : 8);
		h = (h ^ w) * 0xbf58476d1ce4e5b9u;
		h ^= h >> 31;
	}
	h = (h ^ (h >> 30)) * 0x94d049bb133111ebu;
	return (size_t)(h ^ (h >> 31));
}

static void *idmap_get(const struct idmap *m, const char *id)
{
	size_t h, i;

	if (!m->n)
		return NULL;
	h = id_hash(id);
	for (i = h & (m->cap - 1); m->t[i].id; i = (i + 1) & (m->cap - 1))
		if (m->t[i].h == h && strcmp(m->t[i].id, id) == 0)
			return m->t[i].v;
	return NULL;
}

/* Add v under id (not present; id must live as long as the entry). */
static int idmap_put(struct idmap *m, const char *id, void *v)
{
	size_t h, i;

	if ((m->n + 1) * 2 > m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 64, k;
		struct idmap_ent *t = calloc(cap, sizeof(*t));
		if (!t)
			return -1;
		for (k = 0; k < m->cap; k++) {
			if (!m->t[k].id)
				continue;
			for (i = m->t[k].h & (cap - 1); t[i].id; i = (i + 1) & (cap - 1))
				;
			t[i] = m->t[k];
		}
		free(m->t);
		m->t = t;
		m->cap = cap;
	}
	h = id_hash(id);
	for (i = h & (m->cap - 1); m->t[i].id; i = (i + 1) & (m->cap - 1))
		;
	m->t[i].h = h;
	m->t[i].id = id;
	m->t[i].v = v;
	m->n++;
	return 0;
}

/* Remove id (backward-shift deletion: no tombstones). */
static void idmap_del(struct idmap *m, const char *id)
{
	size_t h, i, j;

	if (!m->n)
		return;
	h = id_hash(id);
	for (i = h & (m->cap - 1); m->t[i].id; i = (i + 1) & (m->cap - 1))
		if (m->t[i].h == h && strcmp(m->t[i].id, id) == 0)
			break;
	if (!m->t[i].id)
		return;
	m->n--;
	for (j = (i + 1) & (m->cap - 1); m->t[j].id; j = (j + 1) & (m->cap - 1)) {
		size_t home = m->t[j].h & (m->cap - 1);
		/* move j back to i unless its home lies in (i, j] */
		if (i <= j ? (home <= i || home > j) : (home <= i && home > j)) {
			m->t[i] = m->t[j];
			i = j;
		}
	}
	m->t[i].id = NULL;
}

static void idmap_clear(struct idmap *m)
{
	free(m->t);
	memset(m, 0, sizeof(*m));
}

/* A block kept for the snapshot's life (inner tree nodes, headers), with
 * a slot for what readers derive from it (see opt_source.get_raw). */
struct pin {
	json_t *block;
	struct opt_memo memo;
	char id[];
};

struct opt_snap {
	struct opt_store *s;
	char *name;
	git_commit *commit;
	git_tree *root;
	git_tree *blocks;   /* may be NULL: no blocks */
	long rev;
	char *trx, *summary;
	char *trailer_buf;
	char commit_hex[41];
	struct cache_slot *cache;  /* nslots ring of cached IDs, oldest first */
	size_t nslots, ring;
	json_t *lru;               /* id -> block for the IDs in the ring */
	struct idmap pinned;       /* inner nodes and headers: kept (struct pin) */
	json_t *trailers;          /* parsed trailers */
	char hid[OPT_ID_LEN + 1];  /* the header block's ID, once asked for */
	/* tree leaves' bytes kept for lookups (opt_snap_cache_bytes) */
	struct idmap rmap;         /* id -> struct raw_slot */
	git_tree **t2;             /* blocks/<c1>/<c2> trees by ID prefix */
	struct idmap blobs;        /* their entries by name (block ID) */
	int noblobs;               /* out of memory: search the trees */
	struct raw_slot **rring;   /* oldest first from rhead */
	size_t rcap, rhead, rcount, rbytes, rbudget;
};

/* A block's stored bytes, shared by the cache and the readers it hands
 * them to. */
struct sbuf {
	size_t refs, len;
	unsigned char *data;
};

struct raw_slot {
	struct sbuf *buf;
	struct opt_memo memo;
	char id[];
};

/* libgit2 rescans objects/pack only when the directory's mtime (in whole
 * seconds) changed: a pack another process wrote in the same second as
 * our last scan stays invisible, and so do the objects of a ref it just
 * moved.  On a miss, open the object database afresh and look again. */
static int reload_odb(struct opt_store *s)
{
	git_odb *odb = NULL;
	char objdir[PATH_MAX];

	if (s->gpending)
		return -1;  /* pending objects live in the current one */
	snprintf(objdir, sizeof(objdir), "%s/objects", git_repository_path(s->repo));
	if (git_odb_open(&odb, objdir) < 0)
		return -1;
	if (s->gpack) {
		git_odb_backend *mp = NULL;
		if (git_mempack_new(&mp) < 0 || git_odb_add_backend(odb, mp, 1000) < 0) {
			git_odb_free(odb);
			return -1;
		}
		s->mempack = mp;
		opt_pack_mirror(s->gpack, mp);
	} else {
		s->mempack = NULL;  /* went with the old database */
	}
	git_repository_set_odb(s->repo, odb);
	git_odb_free(s->odb);
	s->odb = odb;
	return 0;
}

static int s_commit_lookup(struct opt_store *s, git_commit **out, const git_oid *id)
{
	int rc = git_commit_lookup(out, s->repo, id);

	if (rc == GIT_ENOTFOUND && reload_odb(s) == 0)
		rc = git_commit_lookup(out, s->repo, id);
	return rc;
}

static int s_tree_lookup(struct opt_store *s, git_tree **out, const git_oid *id)
{
	int rc = git_tree_lookup(out, s->repo, id);

	if (rc == GIT_ENOTFOUND && reload_odb(s) == 0)
		rc = git_tree_lookup(out, s->repo, id);
	return rc;
}

static int s_odb_read(struct opt_store *s, git_odb_object **out, const git_oid *id)
{
	int rc = git_odb_read(out, s->odb, id);

	if (rc == GIT_ENOTFOUND && reload_odb(s) == 0)
		rc = git_odb_read(out, s->odb, id);
	return rc;
}

/* Read object id: *data (malloc'd, NUL-terminated) and *len.  Our pack
 * reader first (several times faster than git_odb_read on a leaf: no
 * zlib stream set-up, libdeflate); libgit2 for what it does not find or
 * cannot read (loose and pending objects, damage: libgit2's own word). */
static int s_read(struct opt_store *s, const git_oid *id, unsigned char **data, size_t *len)
{
	git_odb_object *obj = NULL;
	git_object_t type;

	*data = NULL;
	if (!s->packr && !s->nopackr) {
		char objdir[PATH_MAX];
		snprintf(objdir, sizeof(objdir), "%s/objects", git_repository_path(s->repo));
		if (opt_packr_new(&s->packr, objdir) < 0)
			s->nopackr = 1;
	}
	if (s->packr && !s->gpending && opt_packr_read(s->packr, id, data, len, &type) == 0)
		return 0;
	if (s_odb_read(s, &obj, id) < 0)
		return opt_git_fail(OPT_EINTEGRITY, "cannot read block");
	*len = git_odb_object_size(obj);
	*data = malloc(*len + 1);
	if (!*data) {
		git_odb_object_free(obj);
		return opt_error_set(OPT_EIO, "out of memory");
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
	done = 1;
	return 0;
}

int opt_store_name_valid(const char *name)
{
	size_t n, start = 0, i;

	if (!name)
		return 0;
	n = strlen(name);
	if (n == 0 || n > OPT_NAME_MAX)
		return 0;
	for (i = 0; i <= n; i++) {
		char c = name[i];
		if (c == '/' || c == '\0') {
			size_t len = i - start;
			if (len == 0 || name[start] == '.' || name[start] == '-')
				return 0;
			if (len >= 5 && strncmp(name + i - 5, ".lock", 5) == 0)
				return 0;
			start = i + 1;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return strstr(name, "..") == NULL;
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
		rc = opt_error_set(OPT_EINVAL, "'%s' is not an optimystic store (a git repository without optimystic.version)", dir);
		goto done;
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
		return opt_error_set(OPT_EIO, "out of memory");
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
			return opt_error_set(OPT_ENOTFOUND, "cannot open store '%s': no such directory", dir);
		return opt_error_set(OPT_EIO, "cannot open store '%s': %s", dir, strerror(errno));
	}
	if (!S_ISDIR(st.st_mode))
		return opt_error_set(OPT_EINVAL, "cannot open store '%s': not a directory", dir);
	snprintf(head, sizeof(head), "%s/HEAD", dir);
	if (access(head, F_OK) < 0) {
		if (errno == EACCES)
			return opt_error_set(OPT_EIO, "cannot open store '%s': permission denied", dir);
		return opt_error_set(OPT_EINVAL, "'%s' is not an optimystic store", dir);
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
	if (git_repository_open_ext(&repo, dir, GIT_REPOSITORY_OPEN_NO_SEARCH | GIT_REPOSITORY_OPEN_BARE, NULL) < 0) {
		if (access(dir, R_OK | X_OK) < 0)
			return opt_error_set(OPT_EIO, "cannot open store '%s': %s", dir, strerror(errno));
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
	"collections are the refs refs/opt/collections/NAME, one commit per\n"
	"revision; HEAD names only this commit. To see them:\n"
	"\n"
	"    git log --all --oneline\n"
	"    git log refs/opt/collections/NAME\n"
	"    opt-block stat\n";

/* Point HEAD (detached) at a commit of an empty tree saying what the
 * store is, so that plain git log in it works: a branch would be one more
 * ref beside the collections, and HEAD must name a branch under
 * refs/heads/ or a commit for git fsck --strict.  The two objects go in a
 * pack of their own, as every object of a store does. */
static int root_commit(git_repository *repo)
{
	char objdir[PATH_MAX];
	char buf[1024];
	struct opt_pack *p = NULL;
	git_oid tree_id, commit_id;
	int n, rc;

	snprintf(objdir, sizeof(objdir), "%sobjects", git_repository_path(repo));  /* path ends in / */
	if ((rc = opt_pack_new(&p)) < 0)
		return rc;
	if ((rc = opt_pack_add(p, GIT_OBJECT_TREE, "", 0, &tree_id)) < 0)
		goto done;
	n = snprintf(buf, sizeof(buf), "tree %s\nauthor optimystic <optimystic@localhost> %lld +0000\n"
		     "committer optimystic <optimystic@localhost> %lld +0000\n\n%s",
		     git_oid_tostr_s(&tree_id), (long long)time(NULL), (long long)time(NULL), root_message);
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
			return *path ? 0 : opt_error_set(OPT_EIO, "out of memory");
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

void opt_store_free(struct opt_store *s)
{
	if (!s)
		return;
	opt_store_group_end(s);
	json_decref(s->ocache);
	free(s->oring);
	git_odb_free(s->odb);
	git_repository_free(s->repo);
	opt_packr_free(s->packr);
	free(s->path);
	free(s);
}

const char *opt_store_path(const struct opt_store *s)
{
	return s->path;
}

static int cmp_json_str(const void *a, const void *b)
{
	return strcmp(json_string_value(*(json_t *const *)a), json_string_value(*(json_t *const *)b));
}

int opt_store_list(struct opt_store *s, json_t **out)
{
	git_reference_iterator *it = NULL;
	const char *name;
	json_t *arr = json_array();
	json_t **v = NULL;
	size_t n, i;
	int err;

	*out = NULL;
	if (!arr)
		return opt_error_set(OPT_EIO, "out of memory");
	if (git_reference_iterator_glob_new(&it, s->repo, REF_PREFIX "*") < 0) {
		json_decref(arr);
		return opt_git_fail(OPT_EIO, "cannot list collections");
	}
	while ((err = git_reference_next_name(&name, it)) == 0)
		json_array_append_new(arr, json_string(name + strlen(REF_PREFIX)));
	git_reference_iterator_free(it);
	if (err != GIT_ITEROVER) {
		json_decref(arr);
		return opt_git_fail(OPT_EIO, "cannot list collections");
	}
	n = json_array_size(arr);
	v = malloc((n ? n : 1) * sizeof(*v));
	if (!v) {
		json_decref(arr);
		return opt_error_set(OPT_EIO, "out of memory");
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
	return *out ? 0 : opt_error_set(OPT_EIO, "out of memory");
}

int opt_store_repack(struct opt_store *s)
{
	return opt_pack_consolidate(s->repo, 1);
}

/* ---- snapshots ---- */

static int ref_name(char *buf, size_t n, const char *name)
{
	if (!opt_store_name_valid(name))
		return opt_error_set(OPT_EINVAL, "invalid collection name '%.100s'", name);
	snprintf(buf, n, REF_PREFIX "%s", name);
	return 0;
}

static char *trailer_value(const char *msg, const char *key)
{
	size_t kl = strlen(key);
	const char *p = msg;

	while (p && *p) {
		if (strncmp(p, key, kl) == 0 && p[kl] == ':') {
			const char *v = p + kl + 1, *e;
			while (*v == ' ')
				v++;
			e = strchr(v, '\n');
			return strndup(v, e ? (size_t)(e - v) : strlen(v));
		}
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return NULL;
}

static int snap_from_commit(struct opt_snap **out, struct opt_store *s, const char *name, git_commit *c)
{
	struct opt_snap *snap = calloc(1, sizeof(*snap));
	const git_tree_entry *e;
	const char *msg = git_commit_message(c);
	char *revs;

	*out = NULL;
	if (!snap) {
		git_commit_free(c);
		return opt_error_set(OPT_EIO, "out of memory");
	}
	snap->s = s;
	snap->commit = c;
	snap->name = strdup(name);
	git_oid_tostr(snap->commit_hex, sizeof(snap->commit_hex), git_commit_id(c));
	if (s_tree_lookup(s, &snap->root, git_commit_tree_id(c)) < 0) {
		opt_snap_free(snap);
		return opt_git_fail(OPT_EINTEGRITY, "cannot read collection tree");
	}
	e = git_tree_entry_byname(snap->root, "blocks");
	if (e && s_tree_lookup(s, &snap->blocks, git_tree_entry_id(e)) < 0) {
		opt_snap_free(snap);
		return opt_git_fail(OPT_EINTEGRITY, "cannot read blocks tree");
	}
	revs = trailer_value(msg, "Opt-Rev");
	snap->rev = revs ? strtol(revs, NULL, 10) : 0;
	free(revs);
	snap->trx = trailer_value(msg, "Opt-Trx");
	{
		const char *nl = strchr(msg, '\n');
		snap->summary = strndup(msg, nl ? (size_t)(nl - msg) : strlen(msg));
	}
	snap->trailer_buf = strdup(msg);
	if (snap->rev <= 0) {
		opt_snap_free(snap);
		return opt_error_set(OPT_EINTEGRITY, "collection '%s': commit without an Opt-Rev trailer", name);
	}
	*out = snap;
	return 0;
}

static int snap_open_raw(struct opt_snap **out, struct opt_store *s, const char *name, long rev);

int opt_store_decision_at(struct opt_store *s, const char *primary, const char *trx, const char *stop, int *out)
{
	struct opt_snap *snap = NULL, *p;
	int rc;

	*out = 0;
	rc = snap_open_raw(&snap, s, primary, 0);
	if (rc == OPT_ENOTFOUND) {
		opt_error_clear();
		return 0;
	}
	if (rc < 0)
		return rc;
	/* newest first, back to the primary's head before the pends: the
	 * decision or abort record is always after it */
	for (;;) {
		if (stop && *stop && strcmp(snap->commit_hex, stop) == 0)
			break;
		if (snap->trx && strcmp(snap->trx, trx) == 0) {
			const char *st = opt_snap_trailer(snap, "Opt-Status");
			if (!st || strcmp(st, "committed") == 0)
				*out = 1;
			else if (strcmp(st, "aborted") == 0)
				*out = -1;
			if (*out)
				break;
		}
		rc = opt_snap_parent(&p, snap);
		if (rc == OPT_ENOTFOUND) {
			opt_error_clear();
			break;
		}
		if (rc < 0) {
			opt_snap_free(snap);
			return rc;
		}
		opt_snap_free(snap);
		snap = p;
	}
	opt_snap_free(snap);
	return 0;
}

int opt_store_decision(struct opt_store *s, const char *primary, const char *trx, int64_t since, int *out)
{
	(void)since;  /* no time bound: clocks and stalled writers make it unsafe */
	return opt_store_decision_at(s, primary, trx, NULL, out);
}

int opt_snap_decided(struct opt_snap *snap, int *out)
{
	const char *st = opt_snap_trailer(snap, "Opt-Status");
	char primary[OPT_NAME_MAX + 1];

	*out = 1;
	if (!st || strcmp(st, "pending") != 0)
		return 0;
	st = opt_snap_trailer(snap, "Opt-Primary");
	if (!st)
		return opt_error_set(OPT_EINTEGRITY, "collection '%s' revision %ld is pending without a primary",
				     snap->name, snap->rev);
	snprintf(primary, sizeof(primary), "%.200s", st);
	return opt_store_decision_at(snap->s, primary, opt_snap_trx(snap), opt_snap_trailer(snap, "Opt-Primary-Base"),
				     out);
}

static int head_ids(struct opt_store *s, const char *const *names, size_t n, git_oid *ids)
{
	char ref[sizeof(REF_PREFIX) + OPT_NAME_MAX];
	size_t i;
	int rc;

	for (i = 0; i < n; i++) {
		if ((rc = ref_name(ref, sizeof(ref), names[i])) < 0)
			return rc;
		rc = git_reference_name_to_id(&ids[i], s->repo, ref);
		if (rc == GIT_ENOTFOUND)
			memset(&ids[i], 0, sizeof(ids[i]));
		else if (rc < 0)
			return opt_git_fail(OPT_EIO, "cannot read collection ref");
	}
	return 0;
}

int opt_snap_open_many(struct opt_snap **snaps, struct opt_store *s, const char *const *names, size_t n)
{
	git_oid *before = calloc(n ? n : 1, sizeof(*before)), *after = calloc(n ? n : 1, sizeof(*after));
	size_t i;
	int rc = 0, tries;

	if (!before || !after) {
		free(before);
		free(after);
		return opt_error_set(OPT_EIO, "out of memory");
	}
	for (i = 0; i < n; i++)
		snaps[i] = NULL;
	for (tries = 0; tries < 100; tries++) {
		if ((rc = head_ids(s, names, n, before)) < 0)
			break;
		for (i = 0; i < n && rc == 0; i++) {
			rc = opt_snap_open(&snaps[i], s, names[i], 0);
			if (rc == OPT_ENOTFOUND) {
				snaps[i] = NULL;
				opt_error_clear();
				rc = 0;
			}
		}
		if (rc == 0 && (rc = head_ids(s, names, n, after)) == 0 &&
		    memcmp(before, after, n * sizeof(*before)) == 0)
			break;
		for (i = 0; i < n; i++) {
			opt_snap_free(snaps[i]);
			snaps[i] = NULL;
		}
		if (rc < 0)
			break;
		opt_sleep_ms(1 + opt_random(5));
	}
	if (rc == 0 && tries == 100)
		rc = opt_error_set(OPT_EBUSY, "the collections kept changing while being read");
	free(before);
	free(after);
	return rc;
}

int opt_snap_head(struct opt_snap **out, struct opt_store *s, const char *name)
{
	return snap_open_raw(out, s, name, 0);
}

int opt_snap_open(struct opt_snap **out, struct opt_store *s, const char *name, long rev)
{
	struct opt_snap *snap = NULL, *p;
	int rc, d;

	*out = NULL;
	if ((rc = snap_open_raw(&snap, s, name, rev)) < 0)
		return rc;
	/* readers see a pending revision only once its transaction committed */
	for (;;) {
		if ((rc = opt_snap_decided(snap, &d)) < 0) {
			opt_snap_free(snap);
			return rc;
		}
		if (d == 1)
			break;
		rc = opt_snap_parent(&p, snap);
		opt_snap_free(snap);
		if (rc == OPT_ENOTFOUND)
			return opt_error_set(OPT_ENOTFOUND, "no collection '%s' (its first transaction is not committed yet)",
					     name);
		if (rc < 0)
			return rc;
		snap = p;
	}
	*out = snap;
	return 0;
}

static int snap_open_raw(struct opt_snap **out, struct opt_store *s, const char *name, long rev)
{
	char ref[sizeof(REF_PREFIX) + OPT_NAME_MAX];
	git_oid id;
	git_commit *c = NULL;
	struct opt_snap *snap = NULL;
	int rc;

	*out = NULL;
	if ((rc = ref_name(ref, sizeof(ref), name)) < 0)
		return rc;
	if (s->gpack && s->gpending && strcmp(s->gname, name) == 0) {
		id = s->ghead;  /* the pending revision is the latest */
	} else {
		rc = git_reference_name_to_id(&id, s->repo, ref);
		if (rc == GIT_ENOTFOUND)
			return opt_error_set(OPT_ENOTFOUND, "no collection '%s'", name);
		if (rc < 0)
			return opt_git_fail(OPT_EIO, "cannot read collection ref");
	}
	if (s_commit_lookup(s, &c, &id) < 0)
		return opt_git_fail(OPT_EINTEGRITY, "cannot read collection commit");
	if ((rc = snap_from_commit(&snap, s, name, c)) < 0)
		return rc;
	if (rev > 0 && rev > snap->rev) {
		long have = snap->rev;
		opt_snap_free(snap);
		return opt_error_set(OPT_ENOTFOUND, "collection '%s' has no revision %ld (latest is %ld)", name, rev, have);
	}
	while (rev > 0 && snap->rev > rev) {
		struct opt_snap *p;
		if ((rc = opt_snap_parent(&p, snap)) < 0) {
			opt_snap_free(snap);
			return rc;
		}
		opt_snap_free(snap);
		snap = p;
	}
	*out = snap;
	return 0;
}

int opt_snap_open_commit(struct opt_snap **out, struct opt_store *s, const char *name, const char *commit)
{
	git_oid id;
	git_commit *c = NULL;

	*out = NULL;
	if (!opt_store_name_valid(name))
		return opt_error_set(OPT_EINVAL, "invalid collection name '%.100s'", name);
	if (git_oid_fromstr(&id, commit) < 0)
		return opt_error_set(OPT_EINVAL, "invalid commit ID '%.50s'", commit);
	if (s_commit_lookup(s, &c, &id) < 0)
		return opt_git_fail(OPT_EINTEGRITY, "cannot read commit");
	return snap_from_commit(out, s, name, c);
}

int opt_snap_parent(struct opt_snap **out, struct opt_snap *snap)
{
	git_commit *p = NULL;
	int rc;

	*out = NULL;
	if (git_commit_parentcount(snap->commit) == 0)
		return opt_error_set(OPT_ENOTFOUND, "collection '%s' has no revision before %ld", snap->name, snap->rev);
	if (s_commit_lookup(snap->s, &p, git_commit_parent_id(snap->commit, 0)) < 0)
		return opt_git_fail(OPT_EINTEGRITY, "cannot read parent commit");
	rc = snap_from_commit(out, snap->s, snap->name, p);
	if (rc == 0 && (*out)->rev != snap->rev - 1) {
		long r = (*out)->rev;
		opt_snap_free(*out);
		*out = NULL;
		return opt_error_set(OPT_EINTEGRITY, "collection '%s': revision %ld follows revision %ld",
				     snap->name, snap->rev, r);
	}
	return rc;
}

static void sbuf_release(void *owner)
{
	struct sbuf *b = owner;

	if (b && --b->refs == 0) {
		free(b->data);
		free(b);
	}
}

static void raw_slot_free(struct raw_slot *r)
{
	if (r->memo.p && r->memo.free)
		r->memo.free(r->memo.p);
	sbuf_release(r->buf);
	free(r);
}

static void raw_cache_clear(struct opt_snap *snap)
{
	size_t i;

	for (i = 0; i < snap->rcount; i++)
		raw_slot_free(snap->rring[(snap->rhead + i) % snap->rcap]);
	free(snap->rring);
	idmap_clear(&snap->rmap);
	snap->rring = NULL;
	snap->rcap = snap->rhead = snap->rcount = snap->rbytes = 0;
}

void opt_snap_free(struct opt_snap *snap)
{
	size_t i;

	if (!snap)
		return;
	raw_cache_clear(snap);
	for (i = 0; snap->cache && i < snap->nslots; i++)
		free(snap->cache[i].id);
	free(snap->cache);
	json_decref(snap->lru);
	for (i = 0; i < snap->pinned.cap; i++) {
		struct pin *p = snap->pinned.t[i].id ? snap->pinned.t[i].v : NULL;
		if (!p)
			continue;
		if (p->memo.p && p->memo.free)
			p->memo.free(p->memo.p);
		json_decref(p->block);
		free(p);
	}
	idmap_clear(&snap->pinned);
	json_decref(snap->trailers);
	idmap_clear(&snap->blobs);
	for (i = 0; snap->t2 && i < 32 * 32; i++)
		git_tree_free(snap->t2[i]);
	free(snap->t2);
	git_tree_free(snap->blocks);
	git_tree_free(snap->root);
	git_commit_free(snap->commit);
	free(snap->name);
	free(snap->trx);
	free(snap->summary);
	free(snap->trailer_buf);
	free(snap);
}

const char *opt_snap_name(const struct opt_snap *snap) { return snap->name; }

const char *opt_snap_header_id(struct opt_snap *snap)
{
	if (!snap->hid[0])
		opt_collection_header_id(snap->name, snap->hid);
	return snap->hid;
}
long opt_snap_rev(const struct opt_snap *snap) { return snap->rev; }
const char *opt_snap_trx(const struct opt_snap *snap) { return snap->trx ? snap->trx : ""; }
const char *opt_snap_summary(const struct opt_snap *snap) { return snap->summary ? snap->summary : ""; }
const char *opt_snap_commit(const struct opt_snap *snap) { return snap->commit_hex; }
int64_t opt_snap_time(const struct opt_snap *snap) { return (int64_t)git_commit_time(snap->commit); }

const char *opt_snap_trailer(const struct opt_snap *snap, const char *key)
{
	struct opt_snap *m = (struct opt_snap *)snap;
	json_t *v;
	char *t;

	/* parsed on demand, kept per snapshot: valid until opt_snap_free */
	if (!m->trailers && !(m->trailers = json_object()))
		return NULL;
	v = json_object_get(m->trailers, key);
	if (v)
		return json_is_string(v) ? json_string_value(v) : NULL;
	t = trailer_value(snap->trailer_buf, key);
	json_object_set_new(m->trailers, key, t ? json_string(t) : json_null());
	free(t);
	v = json_object_get(m->trailers, key);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Find the blob of block id. */
/* The slot of a two-character ID prefix in snap->t2 (IDs are a-z, 2-7). */
static size_t t2_slot(const char *id)
{
	return (size_t)(id[0] >= 'a' ? id[0] - 'a' : id[0] - '2' + 26) * 32 +
	       (size_t)(id[1] >= 'a' ? id[1] - 'a' : id[1] - '2' + 26);
}

static int find_blob(struct opt_snap *snap, const char *id, git_oid *out)
{
	const git_tree_entry *e;
	git_tree *t1 = NULL, *t2 = NULL;
	char c[2] = { 0, 0 };
	int rc = OPT_ENOTFOUND;

	if (!opt_id_valid(id))
		return opt_error_set(OPT_EINVAL, "invalid block ID '%.80s'", id);
	if (!snap->blocks)
		return OPT_ENOTFOUND;
	/* the trees of two-character prefixes are kept: a lookup of many
	 * blocks walks each of them many times */
	if (id[1] && snap->t2 && snap->t2[t2_slot(id)]) {
		e = snap->noblobs ? git_tree_entry_byname(snap->t2[t2_slot(id)], id) : idmap_get(&snap->blobs, id);
		if (!e)
			return OPT_ENOTFOUND;
		*out = *git_tree_entry_id(e);
		return 0;
	}
	c[0] = id[0];
	e = git_tree_entry_byname(snap->blocks, c);
	if (!e)
		return OPT_ENOTFOUND;
	if (s_tree_lookup(snap->s, &t1, git_tree_entry_id(e)) < 0)
		return opt_git_fail(OPT_EINTEGRITY, "cannot read block tree");
	c[0] = id[1];
	e = git_tree_entry_byname(t1, c);
	if (!e)
		goto done;
	if (s_tree_lookup(snap->s, &t2, git_tree_entry_id(e)) < 0) {
		rc = opt_git_fail(OPT_EINTEGRITY, "cannot read block tree");
		goto done;
	}
	e = git_tree_entry_byname(t2, id);
	if (e) {
		*out = *git_tree_entry_id(e);
		rc = 0;
	}
	if (id[1] && (snap->t2 || (snap->t2 = calloc(32 * 32, sizeof(*snap->t2))))) {
		size_t i;
		snap->t2[t2_slot(id)] = t2;
		for (i = 0; i < git_tree_entrycount(t2) && !snap->noblobs; i++) {
			const git_tree_entry *te = git_tree_entry_byindex(t2, i);
			const char *n = git_tree_entry_name(te);
			/* (an entry out of place is not found, as by name) */
			if (n[0] == id[0] && n[1] == id[1] && idmap_put(&snap->blobs, n, (void *)te) < 0)
				snap->noblobs = 1;
		}
		t2 = NULL;
	}
done:
	git_tree_free(t2);
	git_tree_free(t1);
	return rc;
}

int opt_snap_block_oid(struct opt_snap *snap, const char *id, char out[41])
{
	git_oid oid;
	int rc = find_blob(snap, id, &oid);

	if (rc < 0)
		return rc;
	git_oid_tostr(out, 41, &oid);
	return 0;
}

int opt_snap_block_raw(struct opt_snap *snap, const char *id, char **buf, size_t *len)
{
	git_oid oid;
	int rc;

	*buf = NULL;
	if ((rc = find_blob(snap, id, &oid)) < 0)
		return rc;
	return s_read(snap->s, &oid, (unsigned char **)buf, len);
}

int opt_snap_block_bytes(struct opt_snap *snap, const char *id, struct opt_bytes *out)
{
	git_oid oid;
	unsigned char *data;
	size_t len;
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = find_blob(snap, id, &oid)) < 0)
		return rc;
	if ((rc = s_read(snap->s, &oid, &data, &len)) < 0)
		return rc;
	out->data = (const char *)data;
	out->len = len;
	out->release = free;
	out->owner = data;
	return 0;
}

/* A block already parsed: 1 and *out, or 0 and *oid (its blob). */
static int snap_cached(struct opt_snap *snap, const char *id, git_oid *oid, json_t **out)
{
	struct pin *p;
	json_t *b;
	int rc;

	if (!snap->cache) {
		if (!snap->nslots)
			snap->nslots = CACHE_SLOTS;
		snap->cache = calloc(snap->nslots, sizeof(*snap->cache));
		if (!snap->lru)
			snap->lru = json_object();
		if (!snap->cache || !snap->lru)
			return opt_error_set(OPT_EIO, "out of memory");
	}
	if ((p = idmap_get(&snap->pinned, id))) {
		*out = json_incref(p->block);
		return 1;
	}
	if ((b = json_object_get(snap->lru, id))) {
		*out = json_incref(b);
		return 1;
	}
	if ((rc = find_blob(snap, id, oid)) < 0)
		return rc;
	if ((b = ocache_get(snap->s, oid))) {
		*out = json_incref(b);
		return 1;
	}
	return 0;
}

/* Parse the bytes data (len; freed here) of block id and cache it. */
static int snap_parse(struct opt_snap *snap, const char *id, unsigned char *data, size_t len, json_t **out)
{
	struct cache_slot *slot;
	json_error_t err;
	json_t *b;

	b = json_loadb((const char *)data, len, 0, &err);
	free(data);
	if (!b)
		return opt_error_set(OPT_EINTEGRITY, "block '%s' of collection '%s' is not valid JSON: %s",
				     id, snap->name, err.text);
	/* inner nodes of trees (a small share of the blocks, read by every
	 * lookup) and headers stay; the rest share the slots, a map with the
	 * oldest entry leaving when it is full */
	if (json_object_get(b, "partitions") || json_object_get(b, "name")) {
		struct pin *p = malloc(sizeof(*p) + strlen(id) + 1);
		if (p) {
			strcpy(p->id, id);
			p->block = json_incref(b);
			p->memo.p = NULL;
			p->memo.free = NULL;
			if (idmap_put(&snap->pinned, p->id, p) < 0) {
				json_decref(b);
				free(p);
			}
		}
		*out = b;
		return 0;
	}
	slot = &snap->cache[snap->ring++ % snap->nslots];
	if (slot->id)
		json_object_del(snap->lru, slot->id);
	free(slot->id);
	slot->id = strdup(id);
	if (slot->id)
		json_object_set(snap->lru, id, b);
	*out = b;
	return 0;
}

static int snap_get(void *ctx, const char *id, json_t **out)
{
	struct opt_snap *snap = ctx;
	git_oid oid;
	unsigned char *data;
	size_t len;
	int rc;

	*out = NULL;
	if ((rc = snap_cached(snap, id, &oid, out)) != 0)
		return rc < 0 ? rc : 0;
	if ((rc = s_read(snap->s, &oid, &data, &len)) < 0)
		return rc;
	return snap_parse(snap, id, data, len, out);
}

static struct raw_slot *raw_cache_get(struct opt_snap *snap, const char *id)
{
	return idmap_get(&snap->rmap, id);
}

/* Keep buf (a new reference is taken) as block id's bytes; NULL when it
 * is not kept (too large, out of memory). */
static struct raw_slot *raw_cache_put(struct opt_snap *snap, const char *id, struct sbuf *buf)
{
	size_t size = buf->len;
	struct raw_slot *r;

	if (!snap->rbudget || size > snap->rbudget / 4)
		return NULL;
	while (snap->rcount && snap->rbytes + size > snap->rbudget) {
		struct raw_slot *old = snap->rring[snap->rhead];
		snap->rhead = (snap->rhead + 1) % snap->rcap;
		snap->rcount--;
		snap->rbytes -= old->buf->len;
		idmap_del(&snap->rmap, old->id);
		raw_slot_free(old);
	}
	if (snap->rcount == snap->rcap) {
		size_t cap = snap->rcap ? snap->rcap * 2 : 1024, i;
		struct raw_slot **nr = malloc(cap * sizeof(*nr));
		if (!nr)
			return NULL;
		for (i = 0; i < snap->rcount; i++)
			nr[i] = snap->rring[(snap->rhead + i) % snap->rcap];
		free(snap->rring);
		snap->rring = nr;
		snap->rcap = cap;
		snap->rhead = 0;
	}
	if (!(r = calloc(1, sizeof(*r) + strlen(id) + 1)))
		return NULL;
	strcpy(r->id, id);
	if (idmap_put(&snap->rmap, r->id, r) < 0) {
		free(r);
		return NULL;
	}
	buf->refs++;
	r->buf = buf;
	snap->rring[(snap->rhead + snap->rcount++) % snap->rcap] = r;
	snap->rbytes += size;
	return r;
}

void opt_snap_cache_bytes(struct opt_snap *snap, size_t bytes)
{
	raw_cache_clear(snap);
	snap->rbudget = bytes;
}

/* Hand buf to raw (the reference the caller holds goes with it). */
static void raw_out(struct opt_bytes *raw, struct sbuf *buf, struct raw_slot *r)
{
	raw->data = (const char *)buf->data;
	raw->len = buf->len;
	raw->release = sbuf_release;
	raw->owner = buf;
	raw->memo = r ? &r->memo : NULL;
}

/* Tree leaves come as their stored bytes (readers scan them); the rest as
 * snap_get gives them. */
static int snap_get_raw(void *ctx, const char *id, json_t **out, struct opt_bytes *raw)
{
	static const char leaf[] = "{\"entries\":[";
	struct opt_snap *snap = ctx;
	git_oid oid;
	unsigned char *data;
	size_t len;
	int rc;
	struct raw_slot *r;
	struct sbuf *buf;
	struct pin *p;

	*out = NULL;
	memset(raw, 0, sizeof(*raw));
	/* inner nodes and headers first: a lookup reads several of them */
	if ((p = idmap_get(&snap->pinned, id))) {
		*out = json_incref(p->block);
		raw->memo = &p->memo;
		return 0;
	}
	if ((r = raw_cache_get(snap, id))) {
		r->buf->refs++;
		raw_out(raw, r->buf, r);
		return 0;
	}
	if ((rc = snap_cached(snap, id, &oid, out)) != 0)
		return rc < 0 ? rc : 0;
	if ((rc = s_read(snap->s, &oid, &data, &len)) < 0)
		return rc;
	if (len > sizeof(leaf) - 1 && memcmp(data, leaf, sizeof(leaf) - 1) == 0) {
		if (!(buf = malloc(sizeof(*buf)))) {
			free(data);
			return opt_error_set(OPT_EIO, "out of memory");
		}
		buf->refs = 1;
		buf->len = len;
		buf->data = data;
		raw_out(raw, buf, raw_cache_put(snap, id, buf));
		return 0;
	}
	return snap_parse(snap, id, data, len, out);
}


void opt_snap_cache(struct opt_snap *snap, size_t blocks)
{
	size_t i;

	for (i = 0; snap->cache && i < snap->nslots; i++)
		free(snap->cache[i].id);
	free(snap->cache);
	snap->cache = NULL;
	json_decref(snap->lru);
	snap->lru = NULL;
	snap->ring = 0;
	snap->nslots = blocks ? blocks : CACHE_SLOTS;
}

struct opt_source opt_snap_source(struct opt_snap *snap)
{
	struct opt_source src = { snap_get, snap, snap_get_raw };
	return src;
}

int opt_snap_foreach(struct opt_snap *snap, int (*cb)(const char *id, void *arg), void *arg)
{
	size_t i, j, k;
	int rc = 0;

	if (!snap->blocks)
		return 0;
	for (i = 0; i < git_tree_entrycount(snap->blocks) && rc == 0; i++) {
		git_tree *t1 = NULL;
		if (s_tree_lookup(snap->s, &t1, git_tree_entry_id(git_tree_entry_byindex(snap->blocks, i))) < 0)
			return opt_git_fail(OPT_EINTEGRITY, "cannot read block tree");
		for (j = 0; j < git_tree_entrycount(t1) && rc == 0; j++) {
			git_tree *t2 = NULL;
			if (s_tree_lookup(snap->s, &t2, git_tree_entry_id(git_tree_entry_byindex(t1, j))) < 0) {
				git_tree_free(t1);
				return opt_git_fail(OPT_EINTEGRITY, "cannot read block tree");
			}
			for (k = 0; k < git_tree_entrycount(t2) && rc == 0; k++)
				rc = cb(git_tree_entry_name(git_tree_entry_byindex(t2, k)), arg);
			git_tree_free(t2);
		}
		git_tree_free(t1);
	}
	return rc;
}

/* Diff two levels-deep trees of blocks (either may be NULL: empty);
 * depth 0 holds blobs. */
static int diff_trees(struct opt_store *s, git_tree *a, git_tree *b, int depth,
		      int (*cb)(const char *id, char change, void *arg), void *arg)
{
	size_t na = a ? git_tree_entrycount(a) : 0, nb = b ? git_tree_entrycount(b) : 0, i = 0, j = 0;
	int rc = 0;

	while (rc == 0 && (i < na || j < nb)) {
		const git_tree_entry *ea = i < na ? git_tree_entry_byindex(a, i) : NULL;
		const git_tree_entry *eb = j < nb ? git_tree_entry_byindex(b, j) : NULL;
		int c = !ea ? 1 : !eb ? -1 : strcmp(git_tree_entry_name(ea), git_tree_entry_name(eb));
		git_tree *ta = NULL, *tb = NULL;

		if (c == 0 && git_oid_equal(git_tree_entry_id(ea), git_tree_entry_id(eb))) {
			i++, j++;
			continue;
		}
		if (depth == 0) {
			rc = cb(c < 0 ? git_tree_entry_name(ea) : git_tree_entry_name(eb), c < 0 ? 'D' : c > 0 ? 'A' : 'M',
				arg);
		} else {
			if (c <= 0 && s_tree_lookup(s, &ta, git_tree_entry_id(ea)) < 0)
				return opt_git_fail(OPT_EINTEGRITY, "cannot read block tree");
			if (c >= 0 && s_tree_lookup(s, &tb, git_tree_entry_id(eb)) < 0) {
				git_tree_free(ta);
				return opt_git_fail(OPT_EINTEGRITY, "cannot read block tree");
			}
			rc = diff_trees(s, ta, tb, depth - 1, cb, arg);
			git_tree_free(ta);
			git_tree_free(tb);
		}
		if (c <= 0)
			i++;
		if (c >= 0)
			j++;
	}
	return rc;
}

int opt_snap_diff(struct opt_snap *a, struct opt_snap *b, int (*cb)(const char *id, char change, void *arg),
		  void *arg)
{
	return diff_trees(a->s, a->blocks, b->blocks, 2, cb, arg);
}

static int count_cb(const char *id, void *arg)
{
	(void)id;
	(*(size_t *)arg)++;
	return 0;
}

int opt_snap_count(struct opt_snap *snap, size_t *n)
{
	*n = 0;
	return opt_snap_foreach(snap, count_cb, n);
}

/* ---- writing ---- */

struct buf {
	char *p;
	size_t len, cap;
};

static int buf_add(struct buf *b, const void *data, size_t n)
{
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *np;
		while (cap < b->len + n)
			cap *= 2;
		np = realloc(b->p, cap);
		if (!np)
			return opt_error_set(OPT_EIO, "out of memory");
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
	return 0;
}

/* A change to one tree: all names at one level are of one kind (blobs or
 * trees), so git's entry order is plain byte order of the names. */
struct tmod {
	char name[OPT_ID_MAX + 1];
	git_oid oid;
	int tree;
	int del;
};

static int entry_add(struct buf *b, int tree, const char *name, const git_oid *oid)
{
	const char *mode = tree ? "40000 " : "100644 ";
	int rc;

	if ((rc = buf_add(b, mode, strlen(mode))) < 0 ||
	    (rc = buf_add(b, name, strlen(name) + 1)) < 0 ||
	    (rc = buf_add(b, oid->id, 20)) < 0)
		return rc;
	return 0;
}

/* Write base (may be NULL) with mods (sorted by name) applied. */
/* Write the tree base with mods applied; path (e.g. "tree:blocks/a")
 * names it so that its next version in a stream is a delta of this one. */
static int write_tree(struct opt_pack *p, const char *path, const git_tree *base, const struct tmod *mods,
		      size_t nmods, git_oid *out, int *empty)
{
	struct buf b = { 0 };
	size_t i = 0, j = 0, nbase = base ? git_tree_entrycount(base) : 0;
	int rc = 0, n = 0;

	while ((i < nbase || j < nmods) && rc == 0) {
		const git_tree_entry *e = i < nbase ? git_tree_entry_byindex(base, i) : NULL;
		int c = !e ? 1 : j >= nmods ? -1 : strcmp(git_tree_entry_name(e), mods[j].name);

		if (c < 0) {
			rc = entry_add(&b, git_tree_entry_type(e) == GIT_OBJECT_TREE, git_tree_entry_name(e),
				       git_tree_entry_id(e));
			n++;
			i++;
			continue;
		}
		if (!mods[j].del) {
			rc = entry_add(&b, mods[j].tree, mods[j].name, &mods[j].oid);
			n++;
		}
		if (c == 0)
			i++;
		j++;
	}
	*empty = n == 0;
	if (rc == 0 && n > 0)
		rc = opt_pack_add_version(p, GIT_OBJECT_TREE, b.p, b.len, path, out);
	free(b.p);
	return rc;
}

struct change {
	char id[OPT_ID_MAX + 1];
	git_oid oid;
	int del;
};

static int canon_add(struct opt_canon *c, const char *id, char *text, size_t len, int borrowed)
{
	if (strlen(id) > OPT_ID_MAX) {
		if (!borrowed)
			free(text);
		return opt_error_set(OPT_EINVAL, "invalid block ID '%.80s'", id);
	}
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 256;
		struct opt_canon_ent *nv = realloc(c->v, cap * sizeof(*nv));
		if (!nv) {
			if (!borrowed)
				free(text);
			return opt_error_set(OPT_EIO, "out of memory");
		}
		c->v = nv;
		c->cap = cap;
	}
	strcpy(c->v[c->n].id, id);
	c->v[c->n].text = text;
	c->v[c->n].len = len;
	c->v[c->n].borrowed = borrowed;
	c->n++;
	return 0;
}

int opt_canon_add(struct opt_canon *c, const char *id, char *text, size_t len)
{
	return canon_add(c, id, text, len, 0);
}

int opt_canon_add_borrowed(struct opt_canon *c, const char *id, const char *text, size_t len)
{
	return canon_add(c, id, (char *)text, len, 1);
}

void opt_canon_clear(struct opt_canon *c)
{
	size_t i;

	for (i = 0; i < c->n; i++)
		if (!c->v[i].borrowed)
			free(c->v[i].text);
	free(c->v);
	memset(c, 0, sizeof(*c));
}

struct collect {
	struct opt_store *s;
	struct opt_pack *pack;
	struct opt_canon *canon;
	struct change *v;
	size_t n, cap;
};

static int collect_cb(const char *id, const json_t *block, const struct opt_block_text *text, void *arg)
{
	struct collect *c = arg;
	struct change *ch;
	int rc = 0;

	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 64;
		struct change *nv = realloc(c->v, cap * sizeof(*nv));
		if (!nv)
			return opt_error_set(OPT_EIO, "out of memory");
		c->v = nv;
		c->cap = cap;
	}
	ch = &c->v[c->n];
	if (!opt_id_valid(id) || strlen(id) > OPT_ID_MAX)
		return opt_error_set(OPT_EINVAL, "invalid block ID '%.80s'", id);
	strcpy(ch->id, id);
	ch->del = block == NULL && text == NULL;
	if (text && !(c->canon && c->canon->next < c->canon->n && strcmp(c->canon->v[c->canon->next].id, id) == 0)) {
		/* a block inserted as text: stored as it is */
		if (opt_pack_add_version(c->pack, GIT_OBJECT_BLOB, text->text, text->len, id, &ch->oid) < 0)
			return OPT_EIO;
	} else if (block || text) {
		char *s;
		size_t len;
		struct opt_canon *cn = c->canon;
		if (cn && cn->next < cn->n && strcmp(cn->v[cn->next].id, id) == 0) {
			struct opt_canon_ent *e = &cn->v[cn->next++];
			if (opt_pack_add_version(c->pack, GIT_OBJECT_BLOB, e->text, e->len, id, &ch->oid) < 0)
				return OPT_EIO;
			if (block)
				ocache_put(c->s, &ch->oid, block);
			c->n++;
			return 0;
		}
		if ((rc = opt_json_canon(&s, &len, block)) < 0)
			return rc;
		rc = opt_pack_add_version(c->pack, GIT_OBJECT_BLOB, s, len, id, &ch->oid);
		free(s);
		if (rc < 0)
			return rc;
		ocache_put(c->s, &ch->oid, block);
	}
	c->n++;
	return 0;
}

static git_tree *subtree(struct opt_store *s, const git_tree *t, const char *name, int *rc)
{
	const git_tree_entry *e;
	git_tree *out = NULL;

	*rc = 0;
	if (!t || !(e = git_tree_entry_byname(t, name)) || git_tree_entry_type(e) != GIT_OBJECT_TREE)
		return NULL;
	if (s_tree_lookup(s, &out, git_tree_entry_id(e)) < 0)
		*rc = opt_git_fail(OPT_EINTEGRITY, "cannot read tree");
	return out;
}

static int build_trees(struct opt_store *s, struct opt_pack *p, struct opt_snap *base,
		       const struct change *ch, size_t n, git_oid *root_out)
{
	git_tree *bblocks = base ? base->blocks : NULL;
	struct tmod *m1 = NULL, *mb = NULL, *ml = NULL, rootmod;
	char path[32];
	size_t nb = 0, i = 0;
	int rc = 0, empty;
	git_oid oid;

	mb = calloc(32, sizeof(*mb));
	m1 = calloc(32, sizeof(*m1));
	ml = n ? malloc(n * sizeof(*ml)) : NULL;
	if (!mb || !m1 || (n && !ml)) {
		rc = opt_error_set(OPT_EIO, "out of memory");
		goto done;
	}
	while (i < n && rc == 0) {
		char c1[2] = { ch[i].id[0], 0 };
		git_tree *b1 = subtree(s, bblocks, c1, &rc);
		size_t n1 = 0;

		if (rc < 0)
			break;
		while (i < n && ch[i].id[0] == c1[0] && rc == 0) {
			char c2[2] = { ch[i].id[1], 0 };
			git_tree *b2 = subtree(s, b1, c2, &rc);
			size_t nl = 0;

			if (rc < 0)
				break;
			while (i < n && ch[i].id[0] == c1[0] && ch[i].id[1] == c2[0]) {
				strcpy(ml[nl].name, ch[i].id);
				ml[nl].oid = ch[i].oid;
				ml[nl].tree = 0;
				ml[nl].del = ch[i].del;
				nl++;
				i++;
			}
			snprintf(path, sizeof(path), "tree:blocks/%s/%s", c1, c2);
			rc = write_tree(p, path, b2, ml, nl, &oid, &empty);
			git_tree_free(b2);
			if (rc < 0)
				break;
			strcpy(m1[n1].name, c2);
			m1[n1].oid = oid;
			m1[n1].tree = 1;
			m1[n1].del = empty;
			n1++;
		}
		snprintf(path, sizeof(path), "tree:blocks/%s", c1);
		if (rc == 0)
			rc = write_tree(p, path, b1, m1, n1, &oid, &empty);
		git_tree_free(b1);
		if (rc < 0)
			break;
		strcpy(mb[nb].name, c1);
		mb[nb].oid = oid;
		mb[nb].tree = 1;
		mb[nb].del = empty;
		nb++;
	}
	if (rc < 0)
		goto done;
	if ((rc = write_tree(p, "tree:blocks", bblocks, mb, nb, &oid, &empty)) < 0)
		goto done;
	memset(&rootmod, 0, sizeof(rootmod));
	strcpy(rootmod.name, "blocks");
	rootmod.oid = oid;
	rootmod.tree = 1;
	rootmod.del = empty;
	rc = write_tree(p, "tree:", base ? base->root : NULL, &rootmod, 1, root_out, &empty);
	if (rc == 0 && empty) /* an empty collection: the empty tree */
		rc = opt_pack_add(p, GIT_OBJECT_TREE, "", 0, root_out);
done:
	free(mb);
	free(m1);
	free(ml);
	return rc;
}

/* A ref update holds its lock for well under a millisecond; a lock file
 * older than $OPT_STALE_LOCK_MS (default 5000) was left by a killed
 * process: remove it so that the collection is not wedged. */
static void break_stale_lock(struct opt_store *s, const char *ref)
{
	char path[PATH_MAX];
	struct stat st;
	struct timespec now;
	const char *e = getenv("OPT_STALE_LOCK_MS");
	long stale = e && *e ? atol(e) : 5000;
	double age;

	snprintf(path, sizeof(path), "%s%s.lock", git_repository_path(s->repo), ref);
	if (stat(path, &st) < 0)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	age = (double)(now.tv_sec - st.st_mtim.tv_sec) * 1000.0 +
	      (double)(now.tv_nsec - st.st_mtim.tv_nsec) / 1e6;
	if (age > (double)stale)
		unlink(path);
}

int opt_store_commit(struct opt_store *s, const char *name, struct opt_snap *base,
		     struct opt_tracker *t, const struct opt_commit_info *info, long *rev)
{
	char ref[sizeof(REF_PREFIX) + OPT_NAME_MAX];
	struct collect col = { 0 };
	struct buf msg = { 0 }, cbuf = { 0 };
	git_oid root, commit, zero;
	git_reference *r = NULL;
	char hex[GIT_OID_HEXSZ + 1], line[512];
	long newrev = base ? base->rev + 1 : 1;
	int64_t now = opt_now_ms() / 1000;
	int rc, grc;

	if ((rc = ref_name(ref, sizeof(ref), name)) < 0)
		return rc;
	if (!info || !info->trx)
		return opt_error_set(OPT_EINVAL, "a commit needs a transaction ID");
	if (s->gpack && strcmp(s->gname, name) != 0)
		return opt_error_set(OPT_EINVAL, "a group commit covers one collection ('%s', not '%s')", s->gname, name);
	if (s->gpack) {
		col.pack = s->gpack;  /* objects go to the group's pack */
	} else if ((rc = opt_pack_new(&col.pack)) < 0) {
		return rc;
	}
	col.canon = info->canon;
	col.s = s;
	if ((rc = opt_tracker_foreach_text(t, collect_cb, &col)) < 0)
		goto done;
	if ((rc = build_trees(s, col.pack, base, col.v, col.n, &root)) < 0)
		goto done;

	snprintf(line, sizeof(line), "%s\n\nOpt-Rev: %ld\nOpt-Trx: %s\n",
		 info->summary && *info->summary ? info->summary : "transaction", newrev, info->trx);
	if ((rc = buf_add(&msg, line, strlen(line))) < 0)
		goto done;
	if (info->trailers && (rc = buf_add(&msg, info->trailers, strlen(info->trailers))) < 0)
		goto done;

	git_oid_tostr(hex, sizeof(hex), &root);
	snprintf(line, sizeof(line), "tree %s\n", hex);
	if ((rc = buf_add(&cbuf, line, strlen(line))) < 0)
		goto done;
	if (base) {
		snprintf(line, sizeof(line), "parent %s\n", base->commit_hex);
		if ((rc = buf_add(&cbuf, line, strlen(line))) < 0)
			goto done;
	}
	snprintf(line, sizeof(line),
		 "author optimystic <optimystic@localhost> %lld +0000\n"
		 "committer optimystic <optimystic@localhost> %lld +0000\n\n",
		 (long long)now, (long long)now);
	if ((rc = buf_add(&cbuf, line, strlen(line))) < 0 ||
	    (rc = buf_add(&cbuf, msg.p, msg.len)) < 0)
		goto done;
	if ((rc = opt_pack_add(col.pack, GIT_OBJECT_COMMIT, cbuf.p, cbuf.len, &commit)) < 0)
		goto done;
	if (s->gpack) {
		/* group commit: remember; the flush writes and moves the ref */
		if (!s->gpending) {
			s->gcreate = base == NULL;
			if (base)
				s->gbase = *git_commit_id(base->commit);
		} else if (!base || !git_oid_equal(git_commit_id(base->commit), &s->ghead)) {
			rc = opt_error_set(OPT_ECONFLICT, "group commit on '%s' must build on its pending revision", name);
			goto done;
		}
		s->ghead = commit;
		s->gpending = 1;
		if (rev)
			*rev = newrev;
		rc = 0;
		goto done;
	}
	{
		char objdir[4096];
		snprintf(objdir, sizeof(objdir), "%s/objects", git_repository_path(s->repo));
		if ((rc = opt_pack_write(col.pack, s->odb, objdir)) < 0)
			goto done;
	}

	memset(&zero, 0, sizeof(zero));
	git_error_clear();
	grc = git_reference_create_matching(&r, s->repo, ref, &commit, 1,
					    base ? git_commit_id(base->commit) : &zero, msg.p);
	if (grc == GIT_EMODIFIED || grc == GIT_EEXISTS || (grc == GIT_ENOTFOUND && base)) {
		rc = opt_error_set(OPT_ECONFLICT, "collection '%s' changed since revision %ld was read",
				   name, base ? base->rev : 0);
		goto done;
	}
	if (grc == GIT_ELOCKED) {
		break_stale_lock(s, ref);
		rc = opt_error_set(OPT_EBUSY, "collection '%s' is locked by another writer", name);
		goto done;
	}
	if (grc < 0) {
		rc = opt_git_fail(OPT_EIO, "cannot update collection ref");
		goto done;
	}
	if (rev)
		*rev = newrev;
	/* keep the number of packs small; failures here lose nothing */
	if (opt_pack_consolidate(s->repo, 0) < 0)
		opt_error_clear();
	rc = 0;
done:
	git_reference_free(r);
	if (col.pack != s->gpack)
		opt_pack_free(col.pack);
	free(col.v);
	free(msg.p);
	free(cbuf.p);
	return rc;
}

int opt_store_group_begin(struct opt_store *s, const char *name)
{
	int rc;

	if (s->gpack)
		return opt_error_set(OPT_EINVAL, "a group commit is already open");
	if (!opt_store_name_valid(name))
		return opt_error_set(OPT_EINVAL, "invalid collection name '%.100s'", name);
	if (!s->mempack) {
		if (git_mempack_new(&s->mempack) < 0 || git_odb_add_backend(s->odb, s->mempack, 1000) < 0) {
			s->mempack = NULL;
			return opt_git_fail(OPT_EIO, "cannot set up group commit");
		}
	}
	if ((rc = opt_pack_new(&s->gpack)) < 0)
		return rc;
	opt_pack_mirror(s->gpack, s->mempack);
	s->gname = strdup(name);
	s->gpending = 0;
	s->gcreate = 0;
	return s->gname ? 0 : opt_error_set(OPT_EIO, "out of memory");
}

void opt_store_group_end(struct opt_store *s)
{
	if (!s->gpack)
		return;
	opt_pack_free(s->gpack);
	s->gpack = NULL;
	free(s->gname);
	s->gname = NULL;
	s->gpending = 0;
	if (s->mempack)
		git_mempack_reset(s->mempack);
}

int opt_store_group_flush(struct opt_store *s)
{
	char ref[sizeof(REF_PREFIX) + OPT_NAME_MAX], objdir[4096];
	git_reference *r = NULL;
	git_oid zero;
	char *name;
	int rc = 0, grc;

	if (!s->gpack)
		return opt_error_set(OPT_EINVAL, "no group commit is open");
	name = strdup(s->gname);
	if (!name)
		return opt_error_set(OPT_EIO, "out of memory");
	if (!s->gpending)
		goto reopen;
	snprintf(ref, sizeof(ref), REF_PREFIX "%s", name);
	snprintf(objdir, sizeof(objdir), "%s/objects", git_repository_path(s->repo));
	if ((rc = opt_pack_write(s->gpack, s->odb, objdir)) < 0)
		goto reopen;
	memset(&zero, 0, sizeof(zero));
	git_error_clear();
	grc = git_reference_create_matching(&r, s->repo, ref, &s->ghead, 1, s->gcreate ? &zero : &s->gbase,
					    "opt group commit");
	git_reference_free(r);
	if (grc == GIT_EMODIFIED || grc == GIT_EEXISTS || (grc == GIT_ENOTFOUND && !s->gcreate))
		rc = opt_error_set(OPT_ECONFLICT, "collection '%s' changed while the group was staged", name);
	else if (grc == GIT_ELOCKED) {
		break_stale_lock(s, ref);
		rc = opt_error_set(OPT_EBUSY, "collection '%s' is locked by another writer", name);
	} else if (grc < 0)
		rc = opt_git_fail(OPT_EIO, "cannot update collection ref");
reopen:
	/* start over with an empty group either way */
	opt_store_group_end(s);
	if (rc == 0 && opt_pack_consolidate(s->repo, 0) < 0)
		opt_error_clear();
	{
		int rc2 = opt_store_group_begin(s, name);
		if (rc == 0)
			rc = rc2;
	}
	free(name);
	return rc;
}
