#include "store.h"
#include "error.h"
#include "gitutil.h"
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

#define CACHE_SLOTS 64      /* default: streaming reads stay small */

struct opt_store {
	git_repository *repo;
	git_odb *odb;
	char *path;
	/* group commit */
	git_odb_backend *mempack;  /* serves pending objects (owned by odb) */
	struct opt_pack *gpack;    /* pending objects (NULL outside a group, or
				      until the first commit after a flush) */
	char *gname;               /* the group's collection, NULL outside one */
	int gpending;              /* 1 once a commit is pending */
	size_t gcount;             /* commits pending */
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
	/* the quarantine of incoming objects (opt_store_quarantine_begin):
	 * its objects directory, read beside ours (and by its own reader) */
	char *qdir;
	int qowner;                /* made here: removed at the end */
	struct opt_packr *qpackr;
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

/* Read object id through our pack readers (the store's, then the
 * quarantine's): OPT_ENOTFOUND for what they do not find or cannot read
 * (libgit2's word then). */
static int packr_read(struct opt_store *s, const git_oid *id, unsigned char **data, size_t *len, git_object_t *type)
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
static int s_read(struct opt_store *s, const git_oid *id, unsigned char **data, size_t *len)
{
	git_odb_object *obj = NULL;
	git_object_t type;

	*data = NULL;
	if (packr_read(s, id, data, len, &type) == 0)
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

int opt_store__repo_open(struct opt_store *s, git_repository **out)
{
	*out = NULL;
	if (git_repository_open_ext(out, s->path, GIT_REPOSITORY_OPEN_NO_SEARCH | GIT_REPOSITORY_OPEN_BARE, NULL) < 0)
		return opt_git_fail(OPT_EIO, "cannot open store");
	return 0;
}

const char *opt_store_path(const struct opt_store *s)
{
	return s->path;
}

/* ---- the quarantine of incoming objects ---- */

/* Stop reading the quarantine (its backend stays in the object database
 * until the next reload_odb) and remove it if it is ours. */
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
	if (reload_odb(s) < 0)
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
		return opt_error_set(OPT_EIO, "out of memory");
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
	if (reload_odb(s) < 0 && rc == 0)
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
	if (!arr)
		return opt_error_set(OPT_EIO, "out of memory");
	opt_ref_collection(prefix, sizeof(prefix), NULL);
	if ((rc = opt_ref_foreach(s->repo, prefix, list_cb, arr, "cannot list collections")) < 0) {
		json_decref(arr);
		return rc;
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
	int rc;

	if ((rc = opt_store_name_check(name)) < 0)
		return rc;
	return opt_ref_collection(buf, n, name);
}

/* The head of the collection whose ref is ref: 1 and *id, 0 when absent,
 * or OPT_EIO "cannot read collection ref: WHY". */
static int head_read(struct opt_store *s, const char *ref, git_oid *id)
{
	int rc = opt_ref_read(s->repo, ref, id);

	return rc < 0 ? opt_git_fail(OPT_EIO, "cannot read collection ref") : rc;
}

static int clash_cb(const char *name, const git_oid *id, void *arg)
{
	(void)id;
	snprintf(arg, OPT_NAME_MAX + 1, "%s", opt_ref_collection_name(name));
	return 1;
}

int opt_store_name_clash(struct opt_store *s, const char *name, char other[OPT_NAME_MAX + 1])
{
	char ref[OPT_REF_MAX];
	const char *coll;
	size_t i;
	git_oid id;
	int rc;

	other[0] = '\0';
	if ((rc = ref_name(ref, sizeof(ref), name)) < 0)
		return rc;
	/* it exists: then nothing clashes with it */
	if ((rc = head_read(s, ref, &id)) != 0)
		return rc < 0 ? rc : 0;
	/* a collection whose name is name's up to a '/' */
	coll = opt_ref_collection_name(ref);
	for (i = (size_t)(coll - ref); ref[i]; i++) {
		if (ref[i] != '/')
			continue;
		ref[i] = '\0';
		rc = head_read(s, ref, &id);
		ref[i] = '/';
		if (rc == 1)
			snprintf(other, OPT_NAME_MAX + 1, "%.*s", (int)(ref + i - coll), coll);
		if (rc != 0)
			return rc;
	}
	/* a collection whose name begins with name and '/' */
	strcat(ref, "/");
	return opt_ref_foreach(s->repo, ref, clash_cb, other, "cannot list collections");
}

int opt_store_check_new(struct opt_store *s, const char *name)
{
	char other[OPT_NAME_MAX + 1];
	int rc = opt_store_name_clash(s, name, other);

	if (rc <= 0)
		return rc;
	return opt_error_set(OPT_EINVAL, "collection '%s' cannot be created: collection '%s' exists", name, other);
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
	revs = opt_trailer_value(msg, "Opt-Rev");
	snap->rev = revs ? strtol(revs, NULL, 10) : 0;
	free(revs);
	snap->trx = opt_trailer_value(msg, "Opt-Trx");
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

/* The first snapshot of the walk of opt_store__decision_from: 1 with
 * *out, or 0 with *d set when there is nothing to walk. */
static int decision_start(struct opt_snap **out, struct opt_store *s, const char *name, const git_oid *at, int *d)
{
	char hex[GIT_OID_HEXSZ + 1], other[OPT_NAME_MAX + 1];
	int rc;

	if (at) {
		git_oid_tostr(hex, sizeof(hex), at);
		return (rc = opt_snap_open_commit(out, s, name, hex)) < 0 ? rc : 1;
	}
	rc = snap_open_raw(out, s, name, 0);
	if (rc != OPT_ENOTFOUND)
		return rc < 0 ? rc : 1;
	opt_error_clear();
	/* a primary that cannot be created while a collection whose name
	 * clashes with its own exists (which is never removed) can hold
	 * neither the decision nor an abort record: aborted */
	if ((rc = opt_store_name_clash(s, name, other)) < 0)
		return rc;
	if (rc == 1)
		*d = -1;
	return 0;
}

int opt_store__decision_from(struct opt_store *s, const char *name, const git_oid *at, const char *trx,
			     const char *stop, int64_t since, int *out)
{
	struct opt_snap *snap = NULL, *p;
	int rc;

	*out = 0;
	if ((rc = decision_start(&snap, s, name, at, out)) <= 0)
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
		if (opt_snap_time(snap) < since - 60)
			break;
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

int opt_store__decision_of(struct opt_store *s, const char *primary, const char *trx, int64_t since, int *out)
{
	char ref[OPT_REF_MAX];
	git_oid b;
	int rc;

	*out = 0;
	if (!opt_store_name_valid(primary))
		return opt_error_set(OPT_EINTEGRITY, "transaction %s names an invalid primary '%s'", trx, primary);
	if ((rc = opt_ref_backup(ref, sizeof(ref), primary)) < 0 || (rc = opt_ref_read(s->repo, ref, &b)) < 0)
		return rc;
	if (rc == 1 && (rc = opt_store__decision_from(s, primary, &b, trx, NULL, since, out)) < 0)
		return rc;
	if (*out)
		return 0;
	return opt_store_decision(s, primary, trx, since, out);
}

int opt_store_decision_at(struct opt_store *s, const char *primary, const char *trx, const char *stop, int *out)
{
	return opt_store__decision_from(s, primary, NULL, trx, stop, 0, out);
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
	char ref[OPT_REF_MAX];
	size_t i;
	int rc;

	for (i = 0; i < n; i++) {
		if ((rc = ref_name(ref, sizeof(ref), names[i])) < 0)
			return rc;
		if ((rc = head_read(s, ref, &ids[i])) < 0)
			return rc;
		if (rc == 0)
			memset(&ids[i], 0, sizeof(ids[i]));
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
	char ref[OPT_REF_MAX];
	git_oid id;
	git_commit *c = NULL;
	struct opt_snap *snap = NULL;
	int rc;

	*out = NULL;
	if ((rc = ref_name(ref, sizeof(ref), name)) < 0)
		return rc;
	if (s->gname && s->gpending && strcmp(s->gname, name) == 0) {
		id = s->ghead;  /* the pending revision is the latest */
	} else {
		if ((rc = head_read(s, ref, &id)) < 0)
			return rc;
		if (rc == 0)
			return opt_error_set(OPT_ENOTFOUND, "no collection '%s'", name);
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
	int rc;

	*out = NULL;
	if ((rc = opt_store_name_check(name)) < 0)
		return rc;
	if (git_oid_fromstr(&id, commit) < 0)
		return opt_error_set(OPT_EINVAL, "invalid commit ID '%s'", opt_esc(commit));
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
	t = opt_trailer_value(snap->trailer_buf, key);
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
		return opt_error_set(OPT_EINVAL, "invalid block ID '%s'", opt_esc(id));
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
				     id, snap->name, opt_esc(err.text));
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

/* ---- shape: what our writer makes ----
 *
 * A revision is a commit "tree", "parent" (none for revision 1, else
 * one), "author", "committer", a blank line and the message; its tree
 * holds "blocks" (40000) and nothing else (or is empty), blocks/ holds
 * one-character directories of the base32 alphabet (40000) and so does
 * each of them, and blocks/<c1>/<c2>/ holds the blobs (100644) of block
 * IDs beginning with c1 c2.  Trees are never empty below the top, their
 * entries strictly in order, their modes written as git writes them.  A
 * peer that sends anything else (a symbolic link, a submodule, "..",
 * ".git", a name with '/', a payload beside blocks/) is refused: git
 * fsck --strict would refuse the store that took it in. */

static int is_b32(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '2' && c <= '7');
}

/* One entry of a raw tree. */
struct tent {
	const char *mode, *name;
	size_t modelen, namelen;
	const unsigned char *oid;
};

/* The next entry of a raw tree at *p: 1 with *e, 0 at the end, -1 when
 * the bytes are no tree entry. */
static int tree_next(const unsigned char **p, const unsigned char *end, struct tent *e)
{
	const unsigned char *q = *p, *sp, *nul;

	if (q == end)
		return 0;
	if (!(sp = memchr(q, ' ', (size_t)(end - q))) || sp == q)
		return -1;
	if (!(nul = memchr(sp + 1, '\0', (size_t)(end - sp - 1))) || nul == sp + 1 || end - nul - 1 < 20)
		return -1;
	e->mode = (const char *)q;
	e->modelen = (size_t)(sp - q);
	e->name = (const char *)sp + 1;
	e->namelen = (size_t)(nul - sp - 1);
	e->oid = nul + 1;
	*p = nul + 21;
	return 1;
}

static int mode_is(const struct tent *e, const char *m)
{
	return e->modelen == strlen(m) && memcmp(e->mode, m, e->modelen) == 0;
}

static int name_cmp(const struct tent *a, const struct tent *b)
{
	size_t n = a->namelen < b->namelen ? a->namelen : b->namelen;
	int c = memcmp(a->name, b->name, n);

	return c ? c : a->namelen < b->namelen ? -1 : a->namelen > b->namelen;
}

struct shape {
	struct opt_store *s;
	char path[OPT_ID_MAX * 2 + 400];  /* the entry's path, printable */
};

/* Read object id (of any kind) raw: *data malloc'd, *type. */
static int s_read_typed(struct opt_store *s, const git_oid *id, unsigned char **data, size_t *len, git_object_t *type)
{
	git_odb_object *obj = NULL;

	*data = NULL;
	if (packr_read(s, id, data, len, type) == 0)
		return 0;
	if (s_odb_read(s, &obj, id) < 0) {
		git_error_clear();
		return OPT_ENOTFOUND;
	}
	*len = git_odb_object_size(obj);
	*type = git_odb_object_type(obj);
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

/* sh->path with entry e's name appended at pathlen (printable bytes
 * only: a hostile name may hold anything). */
static void shape_path(struct shape *sh, size_t pathlen, const struct tent *e)
{
	size_t i, n = pathlen;

	if (n && n < sizeof(sh->path) - 1)
		sh->path[n++] = '/';
	for (i = 0; i < e->namelen && n < sizeof(sh->path) - 1; i++) {
		unsigned char c = (unsigned char)e->name[i];
		sh->path[n++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
	}
	sh->path[n] = '\0';
}

static const char *mode_what(const struct tent *e)
{
	if (mode_is(e, "120000"))
		return " (a symbolic link)";
	if (mode_is(e, "160000"))
		return " (a submodule)";
	if (mode_is(e, "40000"))
		return " (a tree)";
	if (mode_is(e, "100755"))
		return " (an executable file)";
	if (e->modelen > 1 && e->mode[0] == '0')
		return " (written with a leading zero)";
	return "";
}

/* Tree id at level (0 the top, 1 blocks/, 2 blocks/c1/, 3 blocks/c1/c2/)
 * as our writer makes it, looked at only where it differs from old (the
 * tree at the same path in the revision before; NULL: none). */
static int shape_tree(struct shape *sh, const git_oid *id, const git_oid *old, int level, size_t pathlen)
{
	unsigned char *data = NULL, *odata = NULL;
	const unsigned char *p, *end, *op = NULL, *oend = NULL;
	struct tent e, prev = { 0 }, oe = { 0 };
	git_object_t type;
	size_t len, olen, n = 0;
	int rc, got, ogot = 0;
	char hex[GIT_OID_HEXSZ + 1];
	const char *where = pathlen ? sh->path : "";

	git_oid_tostr(hex, sizeof(hex), id);
	if ((rc = s_read_typed(sh->s, id, &data, &len, &type)) < 0) {
		if (rc == OPT_ENOTFOUND)
			rc = opt_error_set(OPT_EINTEGRITY, "tree '%s/' (object %s) is missing", where, hex);
		goto done;
	}
	if (type != GIT_OBJECT_TREE) {
		rc = opt_error_set(OPT_EINTEGRITY, "tree '%s/' (object %s) is a %s", where, hex, git_object_type2string(type));
		goto done;
	}
	if (old && (rc = s_read_typed(sh->s, old, &odata, &olen, &type)) < 0) {
		rc = opt_error_set(OPT_EINTEGRITY, "tree '%s/' of the revision before cannot be read", where);
		goto done;
	}
	if (old) {
		op = odata;
		oend = odata + olen;
		ogot = tree_next(&op, oend, &oe);
	}
	p = data;
	end = data + len;
	while ((got = tree_next(&p, end, &e)) == 1) {
		const char *want = level < 3 ? "40000" : "100644";
		git_oid eid;

		shape_path(sh, pathlen, &e);
		if (level == 0 && !(e.namelen == 6 && memcmp(e.name, "blocks", 6) == 0)) {
			rc = opt_error_set(OPT_EINTEGRITY, "tree entry '%s': a collection holds nothing but blocks/ at the top",
					   sh->path);
			goto done;
		}
		if ((level == 1 || level == 2) && !(e.namelen == 1 && is_b32(e.name[0]))) {
			rc = opt_error_set(OPT_EINTEGRITY, "tree entry '%s': not a fan-out directory (one character of a-z, 2-7)",
					   sh->path);
			goto done;
		}
		if (level == 3) {
			char name[OPT_ID_MAX + 1];
			int ok = e.namelen <= OPT_ID_MAX;
			if (ok) {
				memcpy(name, e.name, e.namelen);
				name[e.namelen] = '\0';
				ok = strlen(name) == e.namelen && opt_id_valid(name) &&
				     name[0] == sh->path[7] && name[1] == sh->path[9];
			}
			if (!ok) {
				rc = opt_error_set(OPT_EINTEGRITY, "tree entry '%s': not a block ID of its fan-out directory",
						   sh->path);
				goto done;
			}
		}
		if (!mode_is(&e, want)) {
			rc = opt_error_set(OPT_EINTEGRITY, "tree entry '%s': mode %.*s%s, where this program writes %s",
					   sh->path, (int)(e.modelen > 12 ? 12 : e.modelen), e.mode, mode_what(&e), want);
			goto done;
		}
		if (n > 0 && name_cmp(&prev, &e) >= 0) {
			rc = opt_error_set(OPT_EINTEGRITY, "tree entry '%s': out of order in its tree (or there twice)", sh->path);
			goto done;
		}
		prev = e;
		n++;
		/* the same entry as the revision before: checked then */
		while (ogot == 1 && name_cmp(&oe, &e) < 0)
			ogot = tree_next(&op, oend, &oe);
		if (ogot == 1 && name_cmp(&oe, &e) == 0 && mode_is(&oe, want) && memcmp(oe.oid, e.oid, 20) == 0)
			continue;
		memcpy(eid.id, e.oid, 20);
		if (level < 3) {
			git_oid oid_old;
			int same = ogot == 1 && name_cmp(&oe, &e) == 0 && mode_is(&oe, want);
			if (same)
				memcpy(oid_old.id, oe.oid, 20);
			if ((rc = shape_tree(sh, &eid, same ? &oid_old : NULL, level + 1, strlen(sh->path))) < 0)
				goto done;
		} else {
			size_t sz;
			if (git_odb_read_header(&sz, &type, sh->s->odb, &eid) < 0 &&
			    (reload_odb(sh->s) < 0 || git_odb_read_header(&sz, &type, sh->s->odb, &eid) < 0)) {
				git_error_clear();
				git_oid_tostr(hex, sizeof(hex), &eid);
				rc = opt_error_set(OPT_EINTEGRITY, "tree entry '%s': its object %s is missing", sh->path, hex);
				goto done;
			}
			if (type != GIT_OBJECT_BLOB) {
				git_oid_tostr(hex, sizeof(hex), &eid);
				rc = opt_error_set(OPT_EINTEGRITY, "tree entry '%s': its object %s is a %s, not a blob", sh->path,
						   hex, git_object_type2string(type));
				goto done;
			}
		}
		sh->path[pathlen] = '\0';
	}
	sh->path[pathlen] = '\0';
	if (got < 0) {
		rc = opt_error_set(OPT_EINTEGRITY, "tree '%s/' (object %s) is damaged", where, hex);
		goto done;
	}
	if (n == 0 && level > 0) {
		rc = opt_error_set(OPT_EINTEGRITY, "tree '%s/' (object %s) is empty", where, hex);
		goto done;
	}
	rc = 0;
done:
	free(odata);
	free(data);
	return rc;
}

/* An ident line's value as git fsck --strict wants it: "NAME <EMAIL>
 * SECONDS +HHMM" (NAME without '<', '>'; EMAIL without '<', '>';
 * SECONDS without a leading zero). */
static int ident_ok(const char *p, const char *end)
{
	const char *lt = memchr(p, '<', (size_t)(end - p)), *gt, *q;

	if (!lt || lt == p || lt[-1] != ' ' || memchr(p, '>', (size_t)(lt - p)))
		return 0;
	if (!(gt = memchr(lt + 1, '>', (size_t)(end - lt - 1))) || memchr(lt + 1, '<', (size_t)(gt - lt - 1)))
		return 0;
	q = gt + 1;
	if (q >= end || *q++ != ' ' || q >= end || *q < '0' || *q > '9' || (*q == '0' && q + 1 < end && q[1] != ' '))
		return 0;
	while (q < end && *q >= '0' && *q <= '9')
		q++;
	if (end - q != 6 || q[0] != ' ' || (q[1] != '+' && q[1] != '-'))
		return 0;
	for (q += 2; q < end; q++)
		if (*q < '0' || *q > '9')
			return 0;
	return 1;
}

/* The commit's header lines as our writer makes them; *tree gets its
 * tree. */
static int shape_commit(const unsigned char *data, size_t len, const git_oid *parent, git_oid *tree)
{
	const char *p = (const char *)data, *end = p + len, *nl;
	int parents = 0, line = 0, author = 0, committer = 0;
	git_oid got;

	if (memchr(data, '\0', len))
		return opt_error_set(OPT_EINTEGRITY, "its commit holds a NUL byte");
	for (;; line++, p = nl + 1) {
		size_t n;
		if (!(nl = memchr(p, '\n', (size_t)(end - p))))
			return opt_error_set(OPT_EINTEGRITY, "its commit has no message");
		if (nl == p)
			break;
		n = (size_t)(nl - p);
		if (line == 0 && n == 45 && strncmp(p, "tree ", 5) == 0 && git_oid_fromstrn(tree, p + 5, 40) == 0)
			continue;
		if (line == 0)
			return opt_error_set(OPT_EINTEGRITY, "its commit does not begin with its tree");
		if (n == 47 && strncmp(p, "parent ", 7) == 0 && !author) {
			if (git_oid_fromstrn(&got, p + 7, 40) < 0)
				return opt_error_set(OPT_EINTEGRITY, "its commit has a parent line git would refuse");
			if (parents++ == 0 && parent && !git_oid_equal(&got, parent))
				return opt_error_set(OPT_EINTEGRITY, "its commit's parent is not the revision before");
			continue;
		}
		if (n > 7 && strncmp(p, "author ", 7) == 0 && !author && !committer) {
			if (!ident_ok(p + 7, nl))
				return opt_error_set(OPT_EINTEGRITY, "its commit has an author line git would refuse");
			author = 1;
			continue;
		}
		if (n > 10 && strncmp(p, "committer ", 10) == 0 && author && !committer) {
			if (!ident_ok(p + 10, nl))
				return opt_error_set(OPT_EINTEGRITY, "its commit has a committer line git would refuse");
			committer = 1;
			continue;
		}
		return opt_error_set(OPT_EINTEGRITY, "its commit has a header line this program does not write (line %d)",
				     line + 1);
	}
	if (parents != (parent ? 1 : 0))
		return opt_error_set(OPT_EINTEGRITY, "its commit has %d parents, where this program writes %d", parents,
				     parent ? 1 : 0);
	if (!author || !committer)
		return opt_error_set(OPT_EINTEGRITY, "its commit has no %s", author ? "committer" : "author");
	return 0;
}

int opt_store_check_shape(struct opt_store *s, const char *commit, const char *parent)
{
	struct shape sh;
	git_oid cid, pid, tree, ptree;
	unsigned char *data = NULL;
	size_t len;
	git_object_t type;
	int rc;

	if (git_oid_fromstr(&cid, commit) < 0 || (parent && git_oid_fromstr(&pid, parent) < 0))
		return opt_error_set(OPT_EINVAL, "invalid commit ID '%.50s'", commit);
	sh.s = s;
	sh.path[0] = '\0';
	if ((rc = s_read_typed(s, &cid, &data, &len, &type)) < 0)
		return rc == OPT_ENOTFOUND ? opt_error_set(OPT_EINTEGRITY, "its commit %s is missing", commit) : rc;
	if (type != GIT_OBJECT_COMMIT)
		rc = opt_error_set(OPT_EINTEGRITY, "its commit %s is a %s", commit, git_object_type2string(type));
	else
		rc = shape_commit(data, len, parent ? &pid : NULL, &tree);
	free(data);
	data = NULL;
	if (rc < 0)
		return rc;
	if (parent) {
		/* (the revision before passed: its tree is ours) */
		if ((rc = s_read_typed(s, &pid, &data, &len, &type)) < 0 || type != GIT_OBJECT_COMMIT || len < 45 ||
		    git_oid_fromstrn(&ptree, (const char *)data + 5, 40) < 0) {
			free(data);
			return rc == OPT_EIO ? rc : opt_error_set(OPT_EINTEGRITY, "the commit of the revision before is damaged");
		}
		free(data);
	}
	return shape_tree(&sh, &tree, parent ? &ptree : NULL, 0, 0);
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
	if (opt_oidset_has(&r->seen, id))
		return 0;
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 1024;
		git_oid *nv = realloc(r->stack, cap * sizeof(*nv));
		if (!nv)
			return opt_error_set(OPT_EIO, "out of memory");
		r->stack = nv;
		r->cap = cap;
	}
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
		if ((rc = s_read_typed(r->s, &id, &data, &len, &type)) < 0) {
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
			while (rc == 0 && tree_next(&p, end, &e) == 1) {
				memcpy(sub.id, e.oid, 20);
				if (mode_is(&e, "40000") || mode_is(&e, "040000"))
					rc = reach_push(r, &sub);
				else if (!mode_is(&e, "160000"))  /* (a submodule's commit is not here) */
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
	reload_odb(s);
	rc = drop_stale_incoming(s);
done:
	opt_pack_unlock(lockfd);
	opt_oidset_clear(&r.seen);
	free(r.stack);
	return rc;
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
		return opt_error_set(OPT_EINVAL, "invalid block ID '%s'", opt_esc(id));
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
		return opt_error_set(OPT_EINVAL, "invalid block ID '%s'", opt_esc(id));
	strcpy(ch->id, id);
	ch->del = block == NULL && text == NULL;
	if (text && !(c->canon && c->canon->next < c->canon->n && strcmp(c->canon->v[c->canon->next].id, id) == 0)) {
		/* a block inserted as text: stored as it is */
		if ((rc = opt_pack_add_version(c->pack, GIT_OBJECT_BLOB, text->text, text->len, id, &ch->oid)) < 0)
			return rc;
	} else if (block || text) {
		char *s;
		size_t len;
		struct opt_canon *cn = c->canon;
		if (cn && cn->next < cn->n && strcmp(cn->v[cn->next].id, id) == 0) {
			struct opt_canon_ent *e = &cn->v[cn->next++];
			if ((rc = opt_pack_add_version(c->pack, GIT_OBJECT_BLOB, e->text, e->len, id, &ch->oid)) < 0)
				return rc;
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

/* The group's pack of pending objects, made when missing. */
static int group_pack(struct opt_store *s)
{
	int rc;

	if (s->gpack)
		return 0;
	if ((rc = opt_pack_new(&s->gpack)) < 0)
		return rc;
	if (s->mempack)
		opt_pack_mirror(s->gpack, s->mempack);
	return 0;
}

/* Drop what the group holds pending (the group stays open). */
static void group_drop(struct opt_store *s)
{
	opt_pack_free(s->gpack);
	s->gpack = NULL;
	s->gpending = 0;
	s->gcount = 0;
	s->gcreate = 0;
	if (s->mempack)
		git_mempack_reset(s->mempack);
}

/* libgit2 could not create the ref of collection name: a collection whose
 * name clashes with it came since the check (OPT_EINVAL, saying so), or
 * another failure (OPT_EIO, libgit2's words). */
static int create_failed(struct opt_store *s, const char *name)
{
	char msg[1024];

	opt_git_fail(OPT_EIO, "cannot update collection ref");
	snprintf(msg, sizeof(msg), "%s", opt_error_last());
	if (opt_store_check_new(s, name) == OPT_EINVAL)
		return OPT_EINVAL;
	return opt_error_set(OPT_EIO, "%s", msg);
}

/* Before the objects of a commit are written.  A writer that cannot
 * move the ref (another holds its lock, or it moved) must not write them:
 * every retry would leave a pack of objects nothing reaches.  So: the
 * collection's commit lock, an flock on a file that stays
 * (opt-locks/<hash of the name>), held from here until the ref has moved,
 * so that the writers of this store never write a pack for a commit that
 * cannot land; then the ref must not be locked (by another program, or
 * left by a killed one) and must still be at base (NULL: absent).
 * 0 with *fd (-1 when the lock file could not be made: the checks still
 * hold), or OPT_EBUSY / OPT_ECONFLICT (*moved) with nothing held. */
static int commit_guard(struct opt_store *s, const char *name, const char *ref, const git_oid *base, int *fd,
			int *moved)
{
	char path[PATH_MAX], hex[OPT_SHA256_HEX + 1];
	const char *dir = git_repository_path(s->repo);
	git_oid cur;
	int has;

	*fd = -1;
	*moved = 0;
	opt_sha256_hex(hex, name, strlen(name));
	snprintf(path, sizeof(path), "%sopt-locks", dir);
	if (mkdir(path, 0777) == 0 || errno == EEXIST) {
		snprintf(path, sizeof(path), "%sopt-locks/%.32s", dir, hex);
		*fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
	}
	if (*fd >= 0 && flock(*fd, LOCK_EX | LOCK_NB) < 0) {
		int busy = errno == EWOULDBLOCK;
		close(*fd);
		*fd = -1;
		if (busy)
			return opt_error_set(OPT_EBUSY, "collection '%s' is busy (another writer of this store is committing)",
					     name);
	}
	opt_ref_break_stale_lock(s->repo, ref);
	if (opt_ref_locked(s->repo, ref)) {
		if (*fd >= 0)
			close(*fd);
		*fd = -1;
		return opt_error_set(OPT_EBUSY, "collection '%s' is busy (its ref is locked: %s.lock)", name, ref);
	}
	if ((has = opt_ref_read(s->repo, ref, &cur)) < 0)
		return 0;  /* (an unreadable ref: the compare-and-swap will say why) */
	*moved = has == 0 ? base != NULL : !base || !git_oid_equal(&cur, base);
	if (*moved) {
		if (*fd >= 0)
			close(*fd);
		*fd = -1;
		return OPT_ECONFLICT;
	}
	git_error_clear();
	return 0;
}

static void commit_unlock(int fd)
{
	if (fd >= 0)
		close(fd);
}

int opt_store_commit(struct opt_store *s, const char *name, struct opt_snap *base,
		     struct opt_tracker *t, const struct opt_commit_info *info, long *rev)
{
	char ref[OPT_REF_MAX];
	struct collect col = { 0 };
	struct opt_trailers tr = { 0 };
	struct buf msg = { 0 }, cbuf = { 0 };
	git_oid root, commit;
	char hex[GIT_OID_HEXSZ + 1], line[512];
	long newrev = base ? base->rev + 1 : 1;
	int64_t now = opt_now_ms() / 1000;
	int rc, lockfd = -1;

	if ((rc = ref_name(ref, sizeof(ref), name)) < 0)
		return rc;
	if (!info || !info->trx)
		return opt_error_set(OPT_EINVAL, "a commit needs a transaction ID");
	if (s->gname && strcmp(s->gname, name) != 0)
		return opt_error_set(OPT_EINVAL, "a group commit covers one collection ('%s', not '%s')", s->gname, name);
	if (s->gname) {
		if ((rc = group_pack(s)) < 0)
			return rc;
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

	snprintf(line, sizeof(line), "%s\n\n", info->summary && *info->summary ? info->summary : "transaction");
	tr.rev = newrev;
	tr.trx = info->trx;
	opt_trailers_format(line, sizeof(line), &tr);
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
	if (s->gname) {
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
		s->gcount++;
		if (rev)
			*rev = newrev;
		rc = 0;
		goto done;
	}
	{
		char objdir[4096];
		int moved;
		if ((rc = commit_guard(s, name, ref, base ? git_commit_id(base->commit) : NULL, &lockfd, &moved)) < 0) {
			if (moved)
				rc = opt_error_set(OPT_ECONFLICT, "collection '%s' changed since revision %ld was read",
						   name, base ? base->rev : 0);
			goto done;
		}
		snprintf(objdir, sizeof(objdir), "%s/objects", git_repository_path(s->repo));
		if ((rc = opt_pack_write(col.pack, s->odb, objdir)) < 0)
			goto done;
	}

	rc = opt_ref_cas(s->repo, ref, base ? git_commit_id(base->commit) : NULL, &commit, msg.p, 0);
	commit_unlock(lockfd);
	lockfd = -1;
	if (rc == OPT_ECONFLICT) {
		rc = opt_error_set(OPT_ECONFLICT, "collection '%s' changed since revision %ld was read",
				   name, base ? base->rev : 0);
		goto done;
	}
	if (rc == OPT_EBUSY) {
		opt_ref_break_stale_lock(s->repo, ref);
		goto done;
	}
	if (rc < 0) {
		rc = base ? opt_git_fail(OPT_EIO, "cannot update collection ref") : create_failed(s, name);
		goto done;
	}
	if (rev)
		*rev = newrev;
	/* keep the number of packs small; failures here lose nothing */
	if (opt_pack_consolidate(s->repo, 0) < 0)
		opt_error_clear();
	rc = 0;
done:
	commit_unlock(lockfd);
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

	if (s->gname)
		return opt_error_set(OPT_EINVAL, "a group commit is already open");
	if ((rc = opt_store_name_check(name)) < 0)
		return rc;
	if (!s->mempack) {
		if (git_mempack_new(&s->mempack) < 0 || git_odb_add_backend(s->odb, s->mempack, 1000) < 0) {
			s->mempack = NULL;
			return opt_git_fail(OPT_EIO, "cannot set up group commit");
		}
	}
	if (!(s->gname = strdup(name)))
		return opt_error_set(OPT_EIO, "out of memory");
	if ((rc = group_pack(s)) < 0) {
		free(s->gname);
		s->gname = NULL;
		return rc;
	}
	s->gpending = 0;
	s->gcount = 0;
	s->gcreate = 0;
	return 0;
}

void opt_store_group_end(struct opt_store *s)
{
	if (!s->gname)
		return;
	group_drop(s);
	free(s->gname);
	s->gname = NULL;
}

int opt_store_group_flush(struct opt_store *s)
{
	char ref[OPT_REF_MAX], objdir[4096];
	size_t n;
	int rc = 0, lockfd = -1, moved;

	if (!s->gname)
		return opt_error_set(OPT_EINVAL, "no group commit is open");
	if (!s->gpending)
		return 0;  /* nothing pending: no commit made durable */
	opt_ref_collection(ref, sizeof(ref), s->gname);
	snprintf(objdir, sizeof(objdir), "%s/objects", git_repository_path(s->repo));
	/* nothing is written for a group that cannot land (see commit_guard) */
	if ((rc = commit_guard(s, s->gname, ref, s->gcreate ? NULL : &s->gbase, &lockfd, &moved)) < 0) {
		if (moved)
			rc = opt_error_set(OPT_ECONFLICT, "collection '%s' changed while the group was staged", s->gname);
		goto done;
	}
	if ((rc = opt_pack_write(s->gpack, s->odb, objdir)) < 0)
		goto done;
	rc = opt_ref_cas(s->repo, ref, s->gcreate ? NULL : &s->gbase, &s->ghead, "opt group commit", 0);
	if (rc == OPT_ECONFLICT)
		rc = opt_error_set(OPT_ECONFLICT, "collection '%s' changed while the group was staged", s->gname);
	else if (rc == OPT_EBUSY)
		opt_ref_break_stale_lock(s->repo, ref);
	else if (rc < 0)
		rc = s->gcreate ? create_failed(s, s->gname) : opt_git_fail(OPT_EIO, "cannot update collection ref");
done:
	commit_unlock(lockfd);
	/* start over with an empty group either way: after a failure, what
	 * was pending is dropped, so no later flush can report it */
	n = s->gcount;
	group_drop(s);
	if (rc < 0)
		return rc;
	if (opt_pack_consolidate(s->repo, 0) < 0)
		opt_error_clear();
	/* the next group's pack, now or at its first commit: the commits
	 * are durable whatever happens to it */
	if (group_pack(s) < 0)
		opt_error_clear();
	return n > INT_MAX ? INT_MAX : (int)n;
}
