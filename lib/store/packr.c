/* packr.c - reading packs: our own reader of the store's packs (block
 * reads), and the checks of an index against its pack. */
#include "pack.h"
#include "store/git.h"
#include "error.h"
#include "util.h"
#include "store/internal.h"

#include <git2/sys/odb_backend.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <libdeflate.h>
#include <zlib.h>
#include <libdeflate.h>
#include <sys/mman.h>

/* ---- reading packs ---- */

struct pk {
	char name[128];          /* "pack-<hex>" */
	const unsigned char *idx, *pack;
	size_t idxlen, packlen;
	int mapped;              /* munmap the index, and the pack if mapped, when freed */
	int fd;                  /* the pack, read with pread when pack is NULL */
	int seen;                /* found by the last directory scan */
	uint32_t n;
	const unsigned char *ids, *offs, *large;
	size_t nlarge;
};

struct opt_packr {
	char *packdir;
	struct pk *v;
	size_t n, cap, last;     /* last: the pack of the last hit */
	int scanned;
	unsigned reads;          /* since the last look at packdir */
	struct timespec mtime;   /* of packdir at the last scan */
	struct libdeflate_decompressor *d;
};

static uint64_t get64(const unsigned char *p)
{
	return (uint64_t)get32(p) << 32 | get32(p + 4);
}

/* Bytes of p's pack from pos, at most want, fewer at the end of its data
 * (the trailer is not data): *w points at them, and owns them when the pack
 * is read with pread rather than mapped (free w->own).  A pack of a store is
 * read so: mapping it would leave the pages around every object read
 * resident (read ahead, faulted around), all of a pack for a put that reads
 * leaves spread across it. */
struct win {
	const unsigned char *b;
	unsigned char *own;
	size_t len;
};

static int pk_pread(int fd, unsigned char *b, size_t n, size_t pos)
{
	size_t got = 0;

	while (got < n) {
		ssize_t k = pread(fd, b + got, n - got, (off_t)(pos + got));
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			if (k == 0)
				errno = 0;    /* the file is shorter than it was */
			return -1;
		}
		got += (size_t)k;
	}
	return 0;
}

static int pk_bytes(const struct pk *p, size_t pos, size_t want, struct win *w)
{
	size_t limit = p->packlen - 20, n = pos < limit ? limit - pos : 0;

	free(w->own);
	w->own = NULL;
	w->b = NULL;
	w->len = 0;
	if (n > want)
		n = want;
	if (p->pack) {
		w->b = p->pack + pos;
		w->len = n;
		return 0;
	}
	if (!(w->own = malloc(n ? n : 1)))
		return opt_error_oom();
	if (pk_pread(p->fd, w->own, n, pos) < 0) {
		free(w->own);
		w->own = NULL;
		return opt_error_set(OPT_EIO, "pack '%s': cannot read: %s", p->name, errno ? strerror(errno) : "short read");
	}
	w->b = w->own;
	w->len = n;
	return 0;
}

/* Check an index and its pack and point p's tables into them: 0 or -1. */
static int pk_init(struct pk *p)
{
	uint32_t prev = 0, f;
	size_t i, base;
	unsigned char hd[12], tl[20];
	const unsigned char *head = hd, *tail = tl;

	if (p->idxlen < 8 + 1024 + 40 || memcmp(p->idx, "\377tOc\0\0\0\2", 8) != 0)
		return -1;
	for (i = 0; i < 256; i++) {
		f = get32(p->idx + 8 + 4 * i);
		if (f < prev)
			return -1;
		prev = f;
	}
	p->n = prev;
	base = 8 + 1024 + (size_t)p->n * 28;
	if ((uint64_t)p->n * 28 > p->idxlen || p->idxlen < base + 40)
		return -1;
	p->ids = p->idx + 8 + 1024;
	p->offs = p->ids + (size_t)p->n * 24;
	p->large = p->offs + (size_t)p->n * 4;
	p->nlarge = (p->idxlen - 40 - base) / 8;
	/* the pack: a header, and the trailer the index names */
	if (p->packlen < 32)
		return -1;
	if (p->pack) {
		head = p->pack;
		tail = p->pack + p->packlen - 20;
	} else if (pk_pread(p->fd, hd, 12, 0) < 0 || pk_pread(p->fd, tl, 20, p->packlen - 20) < 0) {
		return -1;
	}
	if (memcmp(head, "PACK", 4) != 0 || (get32(head + 4) != 2 && get32(head + 4) != 3) ||
	    memcmp(tail, p->idx + p->idxlen - 40, 20) != 0)
		return -1;
	return 0;
}

/* The offset of object id in p: 1 and *off, 0 when absent, -1 when the
 * index gives a bad offset. */
static int pk_find(const struct pk *p, const unsigned char *id, uint64_t *off)
{
	size_t lo = id[0] ? get32(p->idx + 8 + 4 * (id[0] - 1)) : 0, hi = get32(p->idx + 8 + 4 * id[0]);

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = memcmp(p->ids + 20 * mid, id, 20);
		if (c < 0) {
			lo = mid + 1;
		} else if (c > 0) {
			hi = mid;
		} else {
			uint32_t o = get32(p->offs + 4 * mid);
			uint64_t v = o;
			if (o & 0x80000000u) {
				if ((o & 0x7fffffffu) >= p->nlarge)
					return -1;
				v = get64(p->large + 8 * (size_t)(o & 0x7fffffffu));
			}
			if (v < 12 || v >= p->packlen - 20)
				return -1;
			*off = v;
			return 1;
		}
	}
	return 0;
}

static int bad_pack(const struct pk *p, const char *what)
{
	return opt_error_set(OPT_EINTEGRITY, "pack '%s' is damaged: %s", p->name, what);
}

static int too_large(const struct pk *p, uint64_t size)
{
	return opt_error_set(OPT_EINTEGRITY, "pack '%s': an object of %llu bytes, more than an object may have (%zu bytes): refused unread",
			     p->name, (unsigned long long)size, OPT_BLOCK_MAX);
}

/* Inflate size bytes from the zlib stream at pos of p: *out malloc'd. */
static int pk_inflate(struct libdeflate_decompressor *d, const struct pk *p, size_t pos, size_t size,
		      unsigned char **out)
{
	size_t avail = p->packlen - 20 - pos, want;
	unsigned char *b;
	struct win w = { 0 };
	int rc;

	*out = NULL;
	/* deflate expands at most 1032:1: a larger size is a lie */
	if (size / 1032 > avail)
		return bad_pack(p, "object larger than its data");
	if (!(b = malloc(size + 1)))
		return opt_error_oom();
	/* read what zlib makes of size bytes at worst (a little more than
	 * them); a stream longer than that is read again, longer */
	want = p->pack ? avail : size + size / 64 + 64;
	for (;;) {
		if ((rc = pk_bytes(p, pos, want, &w)) < 0) {
			free(b);
			return rc;
		}
		if (libdeflate_zlib_decompress(d, w.b, w.len, b, size, NULL) == LIBDEFLATE_SUCCESS)
			break;
		if (w.len >= avail) {
			free(w.own);
			free(b);
			return bad_pack(p, "object does not inflate to its size");
		}
		want = avail - w.len < 3 * w.len ? avail : 4 * w.len;
	}
	free(w.own);
	b[size] = '\0';
	*out = b;
	return 0;
}

/* The git delta (dl bytes) applied to base (bl bytes): *out malloc'd. */
static int apply_delta(const struct pk *p, const unsigned char *base, size_t bl, const unsigned char *delta,
		       size_t dl, unsigned char **out, size_t *outlen)
{
	const unsigned char *q = delta, *end = delta + dl;
	uint64_t sz[2];
	unsigned char *o;
	size_t at = 0;
	int k;

	*out = NULL;
	for (k = 0; k < 2; k++) {
		unsigned shift = 0;
		sz[k] = 0;
		do {
			if (q >= end || shift > 56)
				return bad_pack(p, "bad delta header");
			sz[k] |= (uint64_t)(*q & 0x7f) << shift;
			shift += 7;
		} while (*q++ & 0x80);
	}
	if (sz[0] != bl)
		return bad_pack(p, "delta against a base of another size");
	if (sz[1] > OPT_BLOCK_MAX)
		return too_large(p, sz[1]);
	/* an instruction of at most 8 bytes makes at most 0xffffff bytes */
	if (sz[1] / 0xffffff > dl)
		return bad_pack(p, "delta larger than its instructions");
	if (!(o = malloc((size_t)sz[1] + 1)))
		return opt_error_oom();
	while (q < end) {
		unsigned c = *q++;
		if (c & 0x80) {
			uint64_t off = 0, n = 0;
			for (k = 0; k < 4; k++)
				if (c & (1u << k)) {
					if (q >= end)
						goto bad;
					off |= (uint64_t)*q++ << (8 * k);
				}
			for (k = 0; k < 3; k++)
				if (c & (0x10u << k)) {
					if (q >= end)
						goto bad;
					n |= (uint64_t)*q++ << (8 * k);
				}
			if (n == 0)
				n = 0x10000;
			if (off > bl || n > bl - off || n > sz[1] - at)
				goto bad;
			memcpy(o + at, base + off, (size_t)n);
			at += (size_t)n;
		} else if (c) {
			if (c > (size_t)(end - q) || c > sz[1] - at)
				goto bad;
			memcpy(o + at, q, c);
			q += c;
			at += c;
		} else {
			goto bad;
		}
	}
	if (at != sz[1])
		goto bad;
	o[at] = '\0';
	*out = o;
	*outlen = at;
	return 0;
bad:
	free(o);
	return bad_pack(p, "bad delta instruction");
}

static int packr_find(struct opt_packr *r, const unsigned char *id, struct pk **pp, uint64_t *off);

/* The object at off of p (deltas resolved, depth deep in a chain). */
static int pk_object(struct opt_packr *r, struct libdeflate_decompressor *d, const struct pk *p, uint64_t off,
		     int depth, unsigned char **data, size_t *len, int *type)
{
	size_t pos = (size_t)off, limit, size;
	unsigned shift = 4, c;
	unsigned char *base = NULL, *delta = NULL, hb[64];
	size_t blen;
	int btype, rc;
	const struct pk *bp = p;
	uint64_t boff;
	struct win w = { 0 };

	*data = NULL;
	/* the header (at most 32 bytes) into hb (hb[0] is the byte at off):
	 * limit ends what was read of it */
	if ((rc = pk_bytes(p, pos, sizeof(hb), &w)) < 0)
		return rc;
	if (!w.len)
		return bad_pack(p, "bad object header");
	memcpy(hb, w.b, w.len);
	limit = pos + w.len;
	free(w.own);
	c = hb[pos++ - off];
	*type = (int)(c >> 4) & 7;
	size = c & 15;
	while (c & 0x80) {
		if (pos >= limit || shift > 57)
			return bad_pack(p, "bad object header");
		c = hb[pos++ - off];
		if ((uint64_t)(c & 0x7f) << shift > SIZE_MAX)
			return bad_pack(p, "bad object header");
		size |= (size_t)(c & 0x7f) << shift;
		shift += 7;
	}
	if (pos >= limit)
		return bad_pack(p, "bad object header");
	/* refused before anything is inflated (a delta's instructions are
	 * at most a little larger than what they make) */
	if (size > OPT_BLOCK_MAX + (OPT_BLOCK_MAX >> 6))
		return too_large(p, size);
	if (*type >= GIT_OBJECT_COMMIT && *type <= GIT_OBJECT_TAG) {
		if (size > OPT_BLOCK_MAX)
			return too_large(p, size);
		if ((rc = pk_inflate(d, p, pos, size, data)) < 0)
			return rc;
		*len = size;
		return 0;
	}
	if (depth >= OPT_PACKR_DEPTH)
		return bad_pack(p, "delta chain too deep");
	if (*type == OBJ_OFS_DELTA) {
		uint64_t dist;
		c = hb[pos++ - off];
		dist = c & 127;
		while (c & 128) {
			if (pos >= limit || dist > (UINT64_MAX >> 8))
				return bad_pack(p, "bad delta offset");
			c = hb[pos++ - off];
			dist = ((dist + 1) << 7) | (c & 127);
		}
		if (dist == 0 || dist > off - 12 || pos >= limit)
			return bad_pack(p, "bad delta offset");
		boff = off - dist;
	} else if (*type == 7 && pos + 20 < limit) {  /* REF_DELTA */
		struct pk *fp = NULL;
		if (r) {
			rc = packr_find(r, hb + (pos - off), &fp, &boff);
			bp = fp;
		} else {
			rc = pk_find(p, hb + (pos - off), &boff);
		}
		if (rc <= 0)
			return rc < 0 ? bad_pack(p, "bad offset in the index")
				      : opt_error_set(OPT_EINTEGRITY, "pack '%s': delta base missing", p->name);
		pos += 20;
	} else {
		return bad_pack(p, "unknown object type");
	}
	if ((rc = pk_object(r, d, bp, boff, depth + 1, &base, &blen, &btype)) < 0)
		return rc;
	if ((rc = pk_inflate(d, p, pos, size, &delta)) == 0)
		rc = apply_delta(p, base, blen, delta, size, data, len);
	*type = btype;
	free(base);
	free(delta);
	return rc;
}

static void pk_unmap(struct pk *p)
{
	if (p->mapped) {
		munmap((void *)p->idx, p->idxlen);
		if (p->pack)
			munmap((void *)p->pack, p->packlen);
		else
			close(p->fd);
	}
}

static const unsigned char *map_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	void *m = MAP_FAILED;

	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) == 0 && st.st_size > 0 && (uint64_t)st.st_size <= SIZE_MAX) {
		m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
		*len = (size_t)st.st_size;
	}
	close(fd);
	return m == MAP_FAILED ? NULL : m;
}

/* Open pack name of r->packdir into p: 0, or -1 when it cannot be read. */
static int pk_open(struct opt_packr *r, const char *name, struct pk *p)
{
	char path[4400];
	struct stat st;

	memset(p, 0, sizeof(*p));
	snprintf(p->name, sizeof(p->name), "%s", name);
	snprintf(path, sizeof(path), "%s/%s.idx", r->packdir, name);
	if (!(p->idx = map_file(path, &p->idxlen)))
		return -1;
	snprintf(path, sizeof(path), "%s/%s.pack", r->packdir, name);
	if ((p->fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(p->fd, &st) < 0 || st.st_size <= 0 ||
	    (uint64_t)st.st_size > SIZE_MAX) {
		if (p->fd >= 0)
			close(p->fd);
		munmap((void *)p->idx, p->idxlen);
		return -1;
	}
	p->packlen = (size_t)st.st_size;
	p->mapped = 1;
	if (pk_init(p) < 0) {
		pk_unmap(p);
		return -1;
	}
	return 0;
}

/* Look at the pack directory again if it changed: 1 when it did. */
static int packr_scan(struct opt_packr *r)
{
	struct stat st;
	struct timespec now;
	DIR *dir;
	struct dirent *e;
	size_t i, k;

	if (stat(r->packdir, &st) < 0)
		return 0;
	if (r->scanned && st.st_mtim.tv_sec == r->mtime.tv_sec && st.st_mtim.tv_nsec == r->mtime.tv_nsec)
		return 0;
	if (!(dir = opendir(r->packdir)))
		return 0;
	r->scanned = 1;
	r->mtime = st.st_mtim;
	/* a change in the same clock tick as this look would leave the
	 * time as it is: a time this recent is not trusted (the directory is
	 * looked at again next time) */
	if (clock_gettime(CLOCK_REALTIME, &now) < 0 || now.tv_sec - st.st_mtim.tv_sec < 2)
		r->mtime.tv_sec = r->mtime.tv_nsec = -1;
	for (i = 0; i < r->n; i++)
		r->v[i].seen = 0;
	while ((e = readdir(dir))) {
		size_t l = strlen(e->d_name);
		char name[128];

		if (l < 10 || strncmp(e->d_name, "pack-", 5) || strcmp(e->d_name + l - 4, ".idx") || l - 4 >= sizeof(name))
			continue;
		memcpy(name, e->d_name, l - 4);
		name[l - 4] = '\0';
		for (i = 0; i < r->n && strcmp(r->v[i].name, name); i++)
			;
		if (i < r->n) {
			r->v[i].seen = 1;
			continue;
		}
		if (OPT_ALLOC_GROW(r->v, r->n + 1, r->cap) < 0) {
			opt_error_clear();
			break;
		}
		if (pk_open(r, name, &r->v[r->n]) == 0)
			r->v[r->n++].seen = 1;
	}
	closedir(dir);
	/* packs gone (rolled up into another) are let go */
	for (i = k = 0; i < r->n; i++) {
		if (r->v[i].seen)
			r->v[k++] = r->v[i];
		else
			pk_unmap(&r->v[i]);
	}
	r->n = k;
	r->last = 0;
	return 1;
}

/* The pack holding id: 1 and *pp, *off; 0 when none does; -1 on a bad
 * index. */
static int packr_find(struct opt_packr *r, const unsigned char *id, struct pk **pp, uint64_t *off)
{
	size_t i;
	int rc;

	if (r->last < r->n && (rc = pk_find(&r->v[r->last], id, off)) != 0) {
		*pp = &r->v[r->last];
		return rc;
	}
	for (i = 0; i < r->n; i++) {
		if (i == r->last)
			continue;
		if ((rc = pk_find(&r->v[i], id, off)) != 0) {
			*pp = &r->v[i];
			r->last = i;
			return rc;
		}
	}
	return 0;
}

int opt_packr_new(struct opt_packr **out, const char *objdir)
{
	struct opt_packr *r = calloc(1, sizeof(*r));

	*out = NULL;
	if (!r || !(r->packdir = malloc(strlen(objdir) + 6)) || !(r->d = libdeflate_alloc_decompressor())) {
		if (r)
			free(r->packdir);
		free(r);
		return opt_error_oom();
	}
	sprintf(r->packdir, "%s/pack", objdir);
	*out = r;
	return 0;
}

void opt_packr_free(struct opt_packr *r)
{
	size_t i;

	if (!r)
		return;
	for (i = 0; i < r->n; i++)
		pk_unmap(&r->v[i]);
	free(r->v);
	free(r->packdir);
	libdeflate_free_decompressor(r->d);
	free(r);
}

static int packr_result(int rc, int t, unsigned char **data, git_object_t *type)
{
	if (rc < 0) {
		free(*data);
		*data = NULL;
		return rc;
	}
	*type = (git_object_t)t;
	return 0;
}

int opt_packr_read(struct opt_packr *r, const git_oid *id, unsigned char **data, size_t *len, git_object_t *type)
{
	struct pk *p = NULL;
	uint64_t off;
	int rc, t = 0;

	*data = NULL;
	/* now and then, even without a miss: packs rolled up by another
	 * process are let go (their disk space with them) */
	if (!r->scanned || ++r->reads % 4096 == 0)
		packr_scan(r);
	rc = packr_find(r, id->id, &p, &off);
	if (rc == 0 && packr_scan(r))
		rc = packr_find(r, id->id, &p, &off);
	if (rc <= 0)
		return rc < 0 ? bad_pack(p ? p : &r->v[0], "bad offset in the index")
			      : opt_error_set(OPT_ENOTFOUND, "object not in any pack");
	rc = pk_object(r, r->d, p, off, 0, data, len, &t);
	return packr_result(rc, t, data, type);
}

int opt_packr_read_mem(const unsigned char *idx, size_t idxlen, const unsigned char *pack, size_t packlen,
		       const git_oid *id, unsigned char **data, size_t *len, git_object_t *type)
{
	struct pk p;
	struct libdeflate_decompressor *d;
	uint64_t off;
	int rc, t = 0;

	*data = NULL;
	memset(&p, 0, sizeof(p));
	strcpy(p.name, "(memory)");
	p.idx = idx;
	p.idxlen = idxlen;
	p.pack = pack;
	p.packlen = packlen;
	if (pk_init(&p) < 0)
		return bad_pack(&p, "not a version 2 index of this pack");
	if ((rc = pk_find(&p, id->id, &off)) <= 0)
		return rc < 0 ? bad_pack(&p, "bad offset in the index")
			      : opt_error_set(OPT_ENOTFOUND, "object not in the pack");
	if (!(d = libdeflate_alloc_decompressor()))
		return opt_error_oom();
	rc = pk_object(NULL, d, &p, off, 0, data, len, &t);
	libdeflate_free_decompressor(d);
	return packr_result(rc, t, data, type);
}

/* ---- checking an index against its pack ---- */

struct offent {
	uint64_t off;
	uint32_t i;
};

static int cmp_offent(const void *a, const void *b)
{
	const struct offent *x = a, *y = b;

	return x->off < y->off ? -1 : x->off > y->off;
}

static int idx_bad(const char *name, const char *what)
{
	return opt_error_set(OPT_EINTEGRITY, "pack index '%s' does not match its pack: %s", name, what);
}

/* The index alone (header, monotone fan-out, sizes and the pack it
 * names were checked by pk_init): its size, its own checksum, the pack's
 * object count; names strictly increasing, each in its fan-out bucket. */
static int idx_check_names(const char *name, const struct pk *p)
{
	struct opt_sha1 h;
	uint8_t sum[20];
	size_t i;

	if (get32(p->pack + 8) != p->n)
		return idx_bad(name, "object count differs from the pack's");
	if ((p->idxlen - 40 - (8 + 1024 + (size_t)p->n * 28)) % 8 != 0)
		return idx_bad(name, "bad size");
	opt_sha1_init(&h);
	opt_sha1_update(&h, p->idx, p->idxlen - 20);
	opt_sha1_final(&h, sum);
	if (memcmp(sum, p->idx + p->idxlen - 20, 20) != 0)
		return idx_bad(name, "bad index checksum");
	for (i = 0; i < p->n; i++) {
		const unsigned char *id = p->ids + 20 * i;
		if (i > 0 && memcmp(id - 20, id, 20) >= 0)
			return idx_bad(name, "object names out of order");
		if ((id[0] ? get32(p->idx + 8 + 4 * (id[0] - 1)) : 0) > i || get32(p->idx + 8 + 4 * id[0]) <= i)
			return idx_bad(name, "fan-out table does not match the names");
	}
	return 0;
}

/* The index (idx_check_names), and the pack's own checksum. */
static int idx_check_head(const char *name, const struct pk *p)
{
	struct opt_sha1 h;
	uint8_t sum[20];
	int rc;

	if ((rc = idx_check_names(name, p)) < 0)
		return rc;
	opt_sha1_init(&h);
	opt_sha1_update(&h, p->pack, p->packlen - 20);
	opt_sha1_final(&h, sum);
	if (memcmp(sum, p->pack + p->packlen - 20, 20) != 0)
		return idx_bad(name, "bad pack checksum");
	return 0;
}

/* Offsets in range, large ones in their table: into v, by offset. */
static int idx_check_offsets(const char *name, const struct pk *p, struct offent *v)
{
	size_t i;

	for (i = 0; i < p->n; i++) {
		uint32_t o = get32(p->offs + 4 * i);
		uint64_t off = o;
		if (o & 0x80000000u) {
			if ((o & 0x7fffffffu) >= p->nlarge)
				return idx_bad(name, "offset outside the large offset table");
			off = get64(p->large + 8 * (size_t)(o & 0x7fffffffu));
		}
		if (off < 12 || off >= p->packlen - 20)
			return idx_bad(name, "offset outside the pack");
		v[i].off = off;
		v[i].i = (uint32_t)i;
	}
	qsort(v, p->n, sizeof(*v), cmp_offent);
	return 0;
}

/* Entry i of v (by offset), at e, len bytes: a sound entry header, and
 * for a delta a base that is an object of the pack. */
static int idx_check_entry(const char *name, const struct offent *v, size_t i, const unsigned char *e, size_t len)
{
	size_t pos = 1;
	unsigned c = e[0], t = (c >> 4) & 7;
	uint64_t dist;
	struct offent key;

	while (c & 0x80 && pos < len)
		c = e[pos++];
	if (t == 0 || t == 5 || c & 0x80 || pos >= len)
		return idx_bad(name, "no object where the index says");
	if (t != OBJ_OFS_DELTA)
		return 0;
	c = e[pos++];
	dist = c & 127;
	while (c & 128 && pos < len && dist <= (UINT64_MAX >> 8)) {
		c = e[pos++];
		dist = ((dist + 1) << 7) | (c & 127);
	}
	key.off = v[i].off - dist;
	if (c & 128 || dist == 0 || dist > v[i].off - 12 || !bsearch(&key, v, i, sizeof(*v), cmp_offent))
		return idx_bad(name, "a delta whose base is no object of the pack");
	return 0;
}

int opt_pack_idx_check_mem(const char *name, const unsigned char *idx, size_t idxlen, const unsigned char *pack,
			   size_t packlen)
{
	struct pk p;
	struct offent *v = NULL;
	size_t i, at, len;
	uint64_t end;
	int rc = 0;

	memset(&p, 0, sizeof(p));
	p.idx = idx;
	p.idxlen = idxlen;
	p.pack = pack;
	p.packlen = packlen;
	if (pk_init(&p) < 0)
		return idx_bad(name, "not a version 2 index of this pack");
	if ((rc = idx_check_head(name, &p)) < 0)
		return rc;
	if (p.n == 0)
		return packlen == 32 ? 0 : idx_bad(name, "an empty index of a pack with data");
	if (!(v = malloc((size_t)p.n * sizeof(*v))))
		return opt_error_oom();
	if ((rc = idx_check_offsets(name, &p, v)) < 0)
		goto done;
	/* the entries tile the pack from its header to its trailer, each
	 * with its CRC-32 and a sound entry header where the index says */
	for (i = 0, at = 12; i < p.n && rc == 0; i++) {
		end = i + 1 < p.n ? v[i + 1].off : packlen - 20;
		if (v[i].off != at) {
			rc = idx_bad(name, v[i].off < at ? "two objects at one offset" : "bytes of the pack no object covers");
			break;
		}
		len = (size_t)(end - v[i].off);
		if (libdeflate_crc32(0, pack + v[i].off, len) != get32(p.ids + (size_t)p.n * 20 + 4 * (size_t)v[i].i))
			rc = idx_bad(name, "CRC-32 of an object differs");
		else
			rc = idx_check_entry(name, v, i, pack + v[i].off, len);
		at = (size_t)end;
	}
done:
	free(v);
	return rc;
}

/* What opt_pack_idx_check_shape checks, on mapped bytes. */
static int idx_check_shape_mem(const char *name, const unsigned char *idx, size_t idxlen,
			       const unsigned char *pack, size_t packlen)
{
	struct pk p;
	struct offent *v = NULL;
	int rc;

	memset(&p, 0, sizeof(p));
	p.idx = idx;
	p.idxlen = idxlen;
	p.pack = pack;
	p.packlen = packlen;
	if (pk_init(&p) < 0)
		return idx_bad(name, "not a version 2 index of this pack");
	if ((rc = idx_check_names(name, &p)) < 0 || p.n == 0)
		return rc;
	OPT_CHECK_ALLOC(v = malloc((size_t)p.n * sizeof(*v)));
	rc = idx_check_offsets(name, &p, v);
	free(v);
	return rc;
}

/* Maps the index and the pack and runs check on them. */
static int idx_check_files(const char *idxpath, const char *packpath,
			   int (*check)(const char *, const unsigned char *, size_t, const unsigned char *, size_t))
{
	const unsigned char *idx, *pack;
	size_t idxlen = 0, packlen = 0;
	const char *name = strrchr(packpath, '/') ? strrchr(packpath, '/') + 1 : packpath;
	int rc;

	if (!(idx = map_file(idxpath, &idxlen)))
		return opt_error_set(OPT_EINTEGRITY, "cannot read pack index '%s': %s", idxpath, strerror(errno ? errno : EINVAL));
	if (!(pack = map_file(packpath, &packlen))) {
		munmap((void *)idx, idxlen);
		return opt_error_set(OPT_EINTEGRITY, "cannot read pack '%s': %s", packpath, strerror(errno ? errno : EINVAL));
	}
	rc = check(name, idx, idxlen, pack, packlen);
	munmap((void *)idx, idxlen);
	munmap((void *)pack, packlen);
	return rc;
}

int opt_pack_idx_check_shape(const char *idxpath, const char *packpath)
{
	return idx_check_files(idxpath, packpath, idx_check_shape_mem);
}

int opt_pack_idx_check(const char *idxpath, const char *packpath)
{
	return idx_check_files(idxpath, packpath, opt_pack_idx_check_mem);
}

/* The result size of the delta whose zlib stream starts at pos of p
 * (only its first bytes inflated): 0 and *size, or -1. */
static int delta_result_size(z_stream *z, const unsigned char *pack, size_t pos, size_t end, uint64_t *size)
{
	unsigned char head[32];
	const unsigned char *q = head, *qe;
	uint64_t sz[2];
	int k, zr;

	if (inflateReset(z) != Z_OK)
		return -1;
	z->next_in = (unsigned char *)(pack + pos);
	z->avail_in = (uInt)(end - pos > (1u << 20) ? 1u << 20 : end - pos);
	z->next_out = head;
	z->avail_out = sizeof(head);
	zr = inflate(z, Z_SYNC_FLUSH);
	if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR)
		return -1;
	qe = head + (sizeof(head) - z->avail_out);
	for (k = 0; k < 2; k++) {
		unsigned shift = 0;
		sz[k] = 0;
		do {
			if (q >= qe || shift > 56)
				return -1;
			sz[k] |= (uint64_t)(*q & 0x7f) << shift;
			shift += 7;
		} while (*q++ & 0x80);
	}
	*size = sz[1];
	return 0;
}

int opt_pack_sizes_check(const char *idxpath, const char *packpath)
{
	struct pk p;
	z_stream z;
	uint64_t *offs = NULL;
	size_t i;
	const char *name = strrchr(packpath, '/') ? strrchr(packpath, '/') + 1 : packpath;
	int rc = 0;

	memset(&p, 0, sizeof(p));
	snprintf(p.name, sizeof(p.name), "%s", name);
	if (!(p.idx = map_file(idxpath, &p.idxlen)) || !(p.pack = map_file(packpath, &p.packlen))) {
		if (p.idx)
			munmap((void *)p.idx, p.idxlen);
		return opt_error_set(OPT_EINTEGRITY, "cannot read pack '%s'", packpath);
	}
	p.mapped = 1;
	memset(&z, 0, sizeof(z));
	if (pk_init(&p) < 0) {
		rc = bad_pack(&p, "not a version 2 index of this pack");
		goto done;
	}
	if (inflateInit(&z) != Z_OK || (p.n && !(offs = malloc((size_t)p.n * sizeof(*offs))))) {
		rc = opt_error_oom();
		goto done;
	}
	for (i = 0; i < p.n; i++) {
		uint32_t o = get32(p.offs + 4 * i);
		offs[i] = o;
		if (o & 0x80000000u) {
			if ((o & 0x7fffffffu) >= p.nlarge) {
				rc = bad_pack(&p, "bad offset in the index");
				goto done;
			}
			offs[i] = get64(p.large + 8 * (size_t)(o & 0x7fffffffu));
		}
		if (offs[i] < 12 || offs[i] >= p.packlen - 20) {
			rc = bad_pack(&p, "bad offset in the index");
			goto done;
		}
	}
	for (i = 0; i < p.n; i++) {
		size_t pos = (size_t)offs[i], limit = p.packlen - 20;
		uint64_t size;
		unsigned c = p.pack[pos++], shift = 4, t = (c >> 4) & 7;
		size = c & 15;
		while (c & 0x80 && pos < limit && shift <= 57) {
			c = p.pack[pos++];
			size |= (uint64_t)(c & 0x7f) << shift;
			shift += 7;
		}
		if (c & 0x80 || pos >= limit) {
			rc = bad_pack(&p, "bad object header");
			goto done;
		}
		if (size > OPT_BLOCK_MAX + (OPT_BLOCK_MAX >> 6) || (t >= 1 && t <= 4 && size > OPT_BLOCK_MAX)) {
			rc = too_large(&p, size);
			goto done;
		}
		if (t == OBJ_OFS_DELTA || t == 7) {
			if (t == 7) {
				pos += 20;
			} else {
				do
					c = p.pack[pos++];
				while (c & 128 && pos < limit);
			}
			if (pos >= limit || delta_result_size(&z, p.pack, pos, limit, &size) < 0) {
				rc = bad_pack(&p, "bad delta");
				goto done;
			}
			if (size > OPT_BLOCK_MAX) {
				rc = too_large(&p, size);
				goto done;
			}
		}
	}
done:
	inflateEnd(&z);
	free(offs);
	pk_unmap(&p);
	return rc;
}
