#include "pack.h"
#include "error.h"
#include "util.h"

#include <git2/sys/odb_backend.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

struct pobj {
	git_oid id;
	uint64_t off;
	uint32_t crc;
};

struct opt_pack {
	unsigned char *buf;  /* the pack stream, from the 12-byte header on */
	size_t len, cap;
	uint32_t count;
	char name[64];       /* "pack-<hex>" once written */
	git_odb_backend *mirror;
	git_oid *set;        /* open-addressing set of object IDs */
	struct pobj *objs;   /* every object: ID, offset, CRC-32 (for the .idx) */
	size_t nobjs, capobjs;
	size_t setcap, setn;
	z_stream z, zs;   /* zs stores small objects without compression:
			     zlib's fixed cost per stream (~10 us) would
			     dominate, for little gain on a few hundred bytes */
	int zinit;
};

static int grow(struct opt_pack *p, size_t need)
{
	size_t cap = p->cap ? p->cap : 1 << 16;
	unsigned char *nb;

	if (p->len + need <= p->cap)
		return 0;
	while (cap < p->len + need)
		cap *= 2;
	nb = realloc(p->buf, cap);
	if (!nb)
		return opt_error_set(OPT_EIO, "out of memory");
	p->buf = nb;
	p->cap = cap;
	return 0;
}

int opt_pack_new(struct opt_pack **out)
{
	struct opt_pack *p = calloc(1, sizeof(*p));

	*out = NULL;
	if (!p || grow(p, 12) < 0) {
		free(p);
		return opt_error_set(OPT_EIO, "out of memory");
	}
	memcpy(p->buf, "PACK\0\0\0\2\0\0\0\0", 12);
	p->len = 12;
	if (deflateInit(&p->z, 1) != Z_OK) {
		free(p->buf);
		free(p);
		return opt_error_set(OPT_EIO, "cannot initialise zlib");
	}
	if (deflateInit2(&p->zs, 0, Z_DEFLATED, 15, 1, Z_DEFAULT_STRATEGY) != Z_OK) {
		deflateEnd(&p->z);
		free(p->buf);
		free(p);
		return opt_error_set(OPT_EIO, "cannot initialise zlib");
	}
	p->zinit = 1;
	*out = p;
	return 0;
}

void opt_pack_free(struct opt_pack *p)
{
	if (!p)
		return;
	if (p->zinit) {
		deflateEnd(&p->z);
		deflateEnd(&p->zs);
	}
	free(p->buf);
	free(p->set);
	free(p->objs);
	free(p);
}

void opt_pack_mirror(struct opt_pack *p, git_odb_backend *backend)
{
	p->mirror = backend;
}

size_t opt_pack_count(const struct opt_pack *p)
{
	return p->count;
}

static size_t oid_hash(const git_oid *id)
{
	size_t h;

	memcpy(&h, id->id, sizeof(h));
	return h;
}

/* 1 if inserted, 0 if present, <0 on error */
static int set_add(struct opt_pack *p, const git_oid *id)
{
	size_t i;

	if ((p->setn + 1) * 2 > p->setcap) {
		size_t ncap = p->setcap ? p->setcap * 2 : 1024, k;
		git_oid *ns = calloc(ncap, sizeof(*ns));
		if (!ns)
			return opt_error_set(OPT_EIO, "out of memory");
		for (k = 0; k < p->setcap; k++) {
			if (git_oid_is_zero(&p->set[k]))
				continue;
			i = oid_hash(&p->set[k]) & (ncap - 1);
			while (!git_oid_is_zero(&ns[i]))
				i = (i + 1) & (ncap - 1);
			ns[i] = p->set[k];
		}
		free(p->set);
		p->set = ns;
		p->setcap = ncap;
	}
	i = oid_hash(id) & (p->setcap - 1);
	while (!git_oid_is_zero(&p->set[i])) {
		if (git_oid_equal(&p->set[i], id))
			return 0;
		i = (i + 1) & (p->setcap - 1);
	}
	p->set[i] = *id;
	p->setn++;
	return 1;
}

static const char *type_name(git_object_t type)
{
	switch (type) {
	case GIT_OBJECT_COMMIT: return "commit";
	case GIT_OBJECT_TREE: return "tree";
	case GIT_OBJECT_BLOB: return "blob";
	case GIT_OBJECT_TAG: return "tag";
	default: return NULL;
	}
}

int opt_pack_add(struct opt_pack *p, git_object_t type, const void *data, size_t len, git_oid *oid)
{
	char hdr[64];
	int hl, rc;
	struct opt_sha1 c;
	git_oid id;
	unsigned char *o;
	size_t sz = len, bound;
	z_stream *z;
	const char *tn = type_name(type);

	if (!tn)
		return opt_error_set(OPT_EINVAL, "bad object type");
	{
		/* "<type> <size>\0", without printf on this hot path */
		char digits[24];
		size_t tl = strlen(tn), dl = 0, v = len;
		do {
			digits[dl++] = (char)('0' + v % 10);
			v /= 10;
		} while (v);
		memcpy(hdr, tn, tl);
		hdr[tl] = ' ';
		for (hl = 0; hl < (int)dl; hl++)
			hdr[tl + 1 + (size_t)hl] = digits[dl - 1 - (size_t)hl];
		hdr[tl + 1 + dl] = '\0';
		hl = (int)(tl + 2 + dl);
	}
	opt_sha1_init(&c);
	opt_sha1_update(&c, hdr, (size_t)hl);
	opt_sha1_update(&c, data, len);
	opt_sha1_final(&c, id.id);
	if (oid)
		*oid = id;
	rc = set_add(p, &id);
	if (rc <= 0)
		return rc;
	if (p->mirror && p->mirror->write(p->mirror, &id, data, len, type) < 0)
		return opt_error_set(OPT_EIO, "cannot keep object in memory");
	z = len < 512 ? &p->zs : &p->z;
	bound = deflateBound(z, len);
	if ((rc = grow(p, 16 + bound)) < 0)
		return rc;
	if (p->nobjs == p->capobjs) {
		size_t cap = p->capobjs ? p->capobjs * 2 : 256;
		struct pobj *no = realloc(p->objs, cap * sizeof(*no));
		if (!no)
			return opt_error_set(OPT_EIO, "out of memory");
		p->objs = no;
		p->capobjs = cap;
	}
	p->objs[p->nobjs].id = id;
	p->objs[p->nobjs].off = p->len;
	o = p->buf + p->len;
	*o = (unsigned char)((type << 4) | (sz & 15));
	sz >>= 4;
	while (sz) {
		*o++ |= 0x80;
		*o = sz & 0x7f;
		sz >>= 7;
	}
	o++;
	deflateReset(z);
	z->next_in = (unsigned char *)data;
	z->avail_in = (uInt)len;
	z->next_out = o;
	z->avail_out = (uInt)bound;
	if (deflate(z, Z_FINISH) != Z_STREAM_END)
		return opt_error_set(OPT_EIO, "zlib deflate failed");
	p->len = (size_t)((o + (bound - z->avail_out)) - p->buf);
	p->objs[p->nobjs].crc = (uint32_t)crc32(0, p->buf + p->objs[p->nobjs].off,
						(uInt)(p->len - p->objs[p->nobjs].off));
	p->nobjs++;
	p->count++;
	return 0;
}

static int cmp_pobj(const void *a, const void *b)
{
	return memcmp(((const struct pobj *)a)->id.id, ((const struct pobj *)b)->id.id, 20);
}

static void put32(unsigned char *o, uint32_t v)
{
	o[0] = (unsigned char)(v >> 24);
	o[1] = (unsigned char)(v >> 16);
	o[2] = (unsigned char)(v >> 8);
	o[3] = (unsigned char)v;
}

static int write_all(int fd, const void *data, size_t len)
{
	const unsigned char *d = data;

	while (len) {
		ssize_t n = write(fd, d, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		d += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Write buf to dir/name through a temporary file: write, fsync, rename. */
static int write_file(const char *dir, const char *name, const void *buf, size_t len, int sync)
{
	char tmp[4200], path[4200];
	int fd, err;

	snprintf(tmp, sizeof(tmp), "%s/tmp_%s_%ld", dir, name, (long)getpid());
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(tmp, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0444);
	if (fd < 0)
		return opt_error_set(OPT_EIO, "cannot write '%s': %s", tmp, strerror(errno));
	if (write_all(fd, buf, len) < 0 || (sync && fsync(fd) < 0)) {
		err = errno;
		close(fd);
		unlink(tmp);
		return opt_error_set(OPT_EIO, "cannot write '%s': %s", tmp, strerror(err));
	}
	if (close(fd) < 0 || rename(tmp, path) < 0) {
		err = errno;
		unlink(tmp);
		return opt_error_set(OPT_EIO, "cannot write '%s': %s", path, strerror(err));
	}
	return 0;
}

static int sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return opt_error_set(OPT_EIO, "cannot open '%s': %s", dir, strerror(errno));
	if (fsync(fd) < 0)
		rc = opt_error_set(OPT_EIO, "cannot sync '%s': %s", dir, strerror(errno));
	close(fd);
	return rc;
}

const char *opt_pack_last_name(const struct opt_pack *p)
{
	return p->name[0] ? p->name : NULL;
}

int opt_pack_fsync_enabled(void)
{
	const char *e = getenv("OPT_FSYNC");
	return !(e && strcmp(e, "0") == 0);
}

int opt_pack_write(struct opt_pack *p, git_odb *odb, const char *objdir)
{
	struct opt_sha1 c;
	unsigned char trailer[20], *idx = NULL, *o;
	char packdir[4096], hex[41], name[64];
	size_t i, nlarge = 0, idxlen;
	uint32_t fan[256];
	int rc = 0, sync = opt_pack_fsync_enabled();

	if (p->count == 0)
		return 0;
	put32(p->buf + 8, p->count);
	opt_sha1_init(&c);
	opt_sha1_update(&c, p->buf, p->len);
	opt_sha1_final(&c, trailer);
	if ((rc = grow(p, 20)) < 0)
		return rc;
	memcpy(p->buf + p->len, trailer, 20);

	/* the version 2 index: fan-out, sorted IDs, CRC-32s, offsets */
	qsort(p->objs, p->nobjs, sizeof(*p->objs), cmp_pobj);
	for (i = 0; i < p->nobjs; i++)
		if (p->objs[i].off >= 0x80000000u)
			nlarge++;
	idxlen = 8 + 1024 + p->nobjs * (20 + 4 + 4) + nlarge * 8 + 40;
	idx = malloc(idxlen);
	if (!idx)
		return opt_error_set(OPT_EIO, "out of memory");
	memcpy(idx, "\377tOc\0\0\0\2", 8);
	memset(fan, 0, sizeof(fan));
	for (i = 0; i < p->nobjs; i++)
		fan[p->objs[i].id.id[0]]++;
	for (i = 1; i < 256; i++)
		fan[i] += fan[i - 1];
	for (i = 0; i < 256; i++)
		put32(idx + 8 + 4 * i, fan[i]);
	o = idx + 8 + 1024;
	for (i = 0; i < p->nobjs; i++, o += 20)
		memcpy(o, p->objs[i].id.id, 20);
	for (i = 0; i < p->nobjs; i++, o += 4)
		put32(o, p->objs[i].crc);
	{
		unsigned char *large = o + 4 * p->nobjs;
		uint32_t li = 0;
		for (i = 0; i < p->nobjs; i++, o += 4) {
			uint64_t off = p->objs[i].off;
			if (off < 0x80000000u) {
				put32(o, (uint32_t)off);
			} else {
				put32(o, 0x80000000u | li);
				put32(large + 8 * li, (uint32_t)(off >> 32));
				put32(large + 8 * li + 4, (uint32_t)off);
				li++;
			}
		}
		o = large + 8 * nlarge;
	}
	memcpy(o, trailer, 20);
	o += 20;
	opt_sha1_init(&c);
	opt_sha1_update(&c, idx, (size_t)(o - idx));
	opt_sha1_final(&c, o);
	o += 20;

	/* the pack first, then its index: readers find packs by their .idx */
	snprintf(packdir, sizeof(packdir), "%s/pack", objdir);
	opt_hex(hex, trailer, 20);
	snprintf(name, sizeof(name), "pack-%s.pack", hex);
	if ((rc = write_file(packdir, name, p->buf, p->len + 20, sync)) < 0)
		goto done;
	snprintf(p->name, sizeof(p->name), "pack-%s", hex);
	snprintf(name, sizeof(name), "pack-%s.idx", hex);
	if ((rc = write_file(packdir, name, idx, (size_t)(o - idx), sync)) < 0)
		goto done;
	if (sync && (rc = sync_dir(packdir)) < 0)
		goto done;
	if (odb)
		git_odb_refresh(odb);
done:
	free(idx);
	return rc;
}

/* ---- consolidation ---- */

struct packinfo {
	char name[128]; /* "pack-<hex>" */
	uint32_t count;
	off_t bytes;
};

static int read_idx_count(const char *path, uint32_t *count)
{
	unsigned char h[8 + 256 * 4];
	FILE *f = fopen(path, "rb");
	size_t n;

	if (!f)
		return -1;
	n = fread(h, 1, sizeof(h), f);
	fclose(f);
	if (n != sizeof(h) || memcmp(h, "\377tOc\0\0\0\2", 8) != 0)
		return -1;
	*count = (uint32_t)h[8 + 255 * 4] << 24 | (uint32_t)h[8 + 255 * 4 + 1] << 16 |
		 (uint32_t)h[8 + 255 * 4 + 2] << 8 | h[8 + 255 * 4 + 3];
	return 0;
}

static int list_packs(const char *packdir, struct packinfo **out, size_t *n)
{
	DIR *d = opendir(packdir);
	struct dirent *e;
	struct packinfo *v = NULL;
	size_t cnt = 0, cap = 0;

	*out = NULL;
	*n = 0;
	if (!d)
		return errno == ENOENT ? 0 : opt_error_set(OPT_EIO, "cannot read '%s': %s", packdir, strerror(errno));
	while ((e = readdir(d))) {
		size_t l = strlen(e->d_name);
		char path[4096];
		struct stat st;
		uint32_t c;

		if (l < 10 || strncmp(e->d_name, "pack-", 5) || strcmp(e->d_name + l - 4, ".idx"))
			continue;
		if (l - 4 >= sizeof(v->name))
			continue;
		snprintf(path, sizeof(path), "%s/%s", packdir, e->d_name);
		if (read_idx_count(path, &c) < 0)
			continue;
		snprintf(path, sizeof(path), "%s/%.*s.pack", packdir, (int)(l - 4), e->d_name);
		if (stat(path, &st) < 0)
			continue;
		if (cnt == cap) {
			cap = cap ? cap * 2 : 16;
			struct packinfo *nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				free(v);
				closedir(d);
				return opt_error_set(OPT_EIO, "out of memory");
			}
			v = nv;
		}
		memcpy(v[cnt].name, e->d_name, l - 4);
		v[cnt].name[l - 4] = '\0';
		v[cnt].count = c;
		v[cnt].bytes = st.st_size;
		cnt++;
	}
	closedir(d);
	*out = v;
	*n = cnt;
	return 0;
}

int opt_pack_stats(git_repository *repo, size_t *packs, size_t *objects, size_t *bytes)
{
	char dir[4096];
	struct packinfo *v;
	size_t n, i;
	int rc;

	snprintf(dir, sizeof(dir), "%s/objects/pack", git_repository_path(repo));
	if ((rc = list_packs(dir, &v, &n)) < 0)
		return rc;
	*packs = n;
	*objects = 0;
	*bytes = 0;
	for (i = 0; i < n; i++) {
		*objects += v[i].count;
		*bytes += (size_t)v[i].bytes;
	}
	free(v);
	return 0;
}

static int cmp_count(const void *a, const void *b)
{
	const struct packinfo *x = a, *y = b;
	return x->count < y->count ? -1 : x->count > y->count;
}

/* The consolidation lock: flock on a file that stays (no create/unlink
 * churn, and a killed holder releases it).  Returns the fd or -1 when
 * another process holds it. */
static int take_lock(const char *path)
{
	int fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0644);

	if (fd < 0)
		return -1;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

struct idxent {
	const unsigned char *id;
	uint64_t off;
	uint32_t crc;
};

static int cmp_off(const void *a, const void *b)
{
	const struct idxent *x = a, *y = b;
	return x->off < y->off ? -1 : x->off > y->off;
}

static int read_whole(const char *path, unsigned char **out, size_t *len)
{
	FILE *f = fopen(path, "rb");
	struct stat st;
	unsigned char *b;

	*out = NULL;
	if (!f)
		return opt_error_set(OPT_EIO, "cannot open '%s': %s", path, strerror(errno));
	if (fstat(fileno(f), &st) < 0 || !(b = malloc((size_t)st.st_size + 1))) {
		fclose(f);
		return opt_error_set(OPT_EIO, "cannot read '%s'", path);
	}
	if (fread(b, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
		free(b);
		fclose(f);
		return opt_error_set(OPT_EIO, "cannot read '%s'", path);
	}
	fclose(f);
	*out = b;
	*len = (size_t)st.st_size;
	return 0;
}

/* Add a raw, already compressed entry (header + zlib data) to p. */
static int pack_add_raw(struct opt_pack *p, const unsigned char *id, const unsigned char *raw, size_t len,
			uint32_t crc)
{
	git_oid oid;
	int rc;

	memcpy(oid.id, id, 20);
	rc = set_add(p, &oid);
	if (rc <= 0)
		return rc;
	if ((rc = grow(p, len)) < 0)
		return rc;
	if (p->nobjs == p->capobjs) {
		size_t cap = p->capobjs ? p->capobjs * 2 : 256;
		struct pobj *no = realloc(p->objs, cap * sizeof(*no));
		if (!no)
			return opt_error_set(OPT_EIO, "out of memory");
		p->objs = no;
		p->capobjs = cap;
	}
	p->objs[p->nobjs].id = oid;
	p->objs[p->nobjs].off = p->len;
	p->objs[p->nobjs].crc = crc;
	p->nobjs++;
	memcpy(p->buf + p->len, raw, len);
	p->len += len;
	p->count++;
	return 0;
}

struct rollup {
	struct opt_pack *pack;
	git_odb *odb;
};

/* Copy every object of one pack into the roll-up: whole objects are copied
 * as they are stored (no inflate, no deflate); deltas (from packs fetched
 * from peers) are resolved through the object database. */
static int rollup_pack(const char *dir, const char *name, struct rollup *r)
{
	char path[4400];
	unsigned char *idx = NULL, *pk = NULL;
	size_t idxlen, pklen, i, n;
	struct idxent *e = NULL;
	int rc;

	snprintf(path, sizeof(path), "%s/%s.idx", dir, name);
	if ((rc = read_whole(path, &idx, &idxlen)) < 0)
		return rc;
	snprintf(path, sizeof(path), "%s/%s.pack", dir, name);
	if ((rc = read_whole(path, &pk, &pklen)) < 0)
		goto done;
	if (idxlen < 8 + 1024 + 40 || memcmp(idx, "\377tOc\0\0\0\2", 8) != 0 || pklen < 32) {
		rc = opt_error_set(OPT_EINTEGRITY, "pack '%s' has a damaged index", name);
		goto done;
	}
	n = get32(idx + 8 + 255 * 4);
	if (idxlen < 8 + 1024 + n * 28 + 40) {
		rc = opt_error_set(OPT_EINTEGRITY, "pack '%s' has a truncated index", name);
		goto done;
	}
	e = malloc((n ? n : 1) * sizeof(*e));
	if (!e) {
		rc = opt_error_set(OPT_EIO, "out of memory");
		goto done;
	}
	for (i = 0; i < n; i++) {
		const unsigned char *offs = idx + 8 + 1024 + n * 24;
		uint32_t o = get32(offs + 4 * i);
		e[i].id = idx + 8 + 1024 + 20 * i;
		e[i].crc = get32(idx + 8 + 1024 + n * 20 + 4 * i);
		if (o & 0x80000000u) {
			const unsigned char *lg = offs + 4 * n + 8 * (o & 0x7fffffffu);
			if (lg + 8 > idx + idxlen - 40) {
				rc = opt_error_set(OPT_EINTEGRITY, "pack '%s' has a damaged index", name);
				goto done;
			}
			e[i].off = (uint64_t)get32(lg) << 32 | get32(lg + 4);
		} else {
			e[i].off = o;
		}
	}
	qsort(e, n, sizeof(*e), cmp_off);
	for (i = 0; i < n && rc == 0; i++) {
		uint64_t end = i + 1 < n ? e[i + 1].off : pklen - 20;
		int type;

		if (e[i].off < 12 || end <= e[i].off || end > pklen - 20) {
			rc = opt_error_set(OPT_EINTEGRITY, "pack '%s' has a damaged index", name);
			break;
		}
		type = (pk[e[i].off] >> 4) & 7;
		if (type >= 1 && type <= 4) {
			rc = pack_add_raw(r->pack, e[i].id, pk + e[i].off, (size_t)(end - e[i].off), e[i].crc);
		} else {
			git_oid id;
			git_odb_object *obj;
			memcpy(id.id, e[i].id, 20);
			if (git_odb_read(&obj, r->odb, &id) < 0) {
				const git_error *ge = git_error_last();
				rc = opt_error_set(OPT_EINTEGRITY, "cannot read object while packing: %s",
						   ge ? ge->message : "unknown");
				break;
			}
			rc = opt_pack_add(r->pack, git_odb_object_type(obj), git_odb_object_data(obj),
					  git_odb_object_size(obj), NULL);
			git_odb_object_free(obj);
		}
	}
done:
	free(e);
	free(pk);
	free(idx);
	return rc;
}

int opt_pack_consolidate(git_repository *repo, int force)
{
	char dir[4096], lock[4200], path[4400], objdir[4096];
	struct packinfo *v = NULL;
	size_t n, i, k = 0, split = 0;
	uint64_t total = 0;
	struct rollup r = { NULL, NULL };
	int rc = 0, lockfd = -1;

	snprintf(objdir, sizeof(objdir), "%s/objects", git_repository_path(repo));
	snprintf(dir, sizeof(dir), "%s/objects/pack", git_repository_path(repo));
	if ((rc = list_packs(dir, &v, &n)) < 0)
		return rc;
	/* a few packs cost nothing to read through: leave them */
	if (n < 2 || (!force && n < 8))
		goto done;
	qsort(v, n, sizeof(*v), cmp_count);
	if (force) {
		split = n;
	} else {
		/* git's geometric rule (factor 2): from the largest pack down,
		 * find where the progression breaks; roll up everything below,
		 * then every larger pack that is not twice the roll-up */
		for (i = n - 1; i > 0; i--)
			if ((uint64_t)v[i].count < 2 * (uint64_t)v[i - 1].count)
				break;
		split = i;
		for (i = 0; i < split; i++)
			total += v[i].count;
		for (i = split; i < n && split > 0; i++) {
			if ((uint64_t)v[i].count < 2 * total) {
				split++;
				total += v[i].count;
			} else {
				break;
			}
		}
	}
	if (split < 2)
		goto done;
	snprintf(lock, sizeof(lock), "%s/opt-repack.lock", dir);
	if ((lockfd = take_lock(lock)) < 0)
		goto done;
	if (git_repository_odb(&r.odb, repo) < 0) {
		rc = opt_error_set(OPT_EIO, "cannot open object database");
		goto done;
	}
	if ((rc = opt_pack_new(&r.pack)) < 0)
		goto done;
	for (k = 0; k < split && rc == 0; k++)
		rc = rollup_pack(dir, v[k].name, &r);
	if (rc == 0)
		rc = opt_pack_write(r.pack, NULL, objdir);
	if (rc == 0) {
		/* the new pack holds every object: the old ones can go (unless
		 * it is one of them: the same objects make the same pack) */
		for (k = 0; k < split; k++) {
			static const char *ext[] = { ".keep", ".idx", ".pack", ".rev" };
			size_t e;
			snprintf(path, sizeof(path), "%s/%s.pack", dir, v[k].name);
			if (opt_pack_last_name(r.pack) && strcmp(opt_pack_last_name(r.pack), v[k].name) == 0)
				continue;
			for (e = 0; e < sizeof(ext) / sizeof(*ext); e++) {
				snprintf(path, sizeof(path), "%s/%s%s", dir, v[k].name, ext[e]);
				if (e == 0 && access(path, F_OK) == 0)
					break; /* kept by someone: leave it */
				unlink(path);
			}
		}
		git_odb_refresh(r.odb);
	}
done:
	if (lockfd >= 0)
		close(lockfd);
	opt_pack_free(r.pack);
	git_odb_free(r.odb);
	free(v);
	return rc;
}
