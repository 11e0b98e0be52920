#include "util.h"
#include "error.h"

#include <openssl/sha.h>
#include <sodium.h>
#include <string.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";

int opt_util_init(void)
{
	if (sodium_init() < 0)
		return opt_error_set(OPT_EIO, "cannot initialise libsodium");
	return 0;
}

size_t opt_base32_len(size_t len)
{
	return (len * 8 + 4) / 5;
}

void opt_base32_encode(char *out, const uint8_t *in, size_t len)
{
	uint32_t acc = 0;
	int bits = 0;
	size_t i, o = 0;

	for (i = 0; i < len; i++) {
		acc = (acc << 8) | in[i];
		bits += 8;
		while (bits >= 5) {
			out[o++] = b32[(acc >> (bits - 5)) & 31];
			bits -= 5;
		}
	}
	if (bits > 0)
		out[o++] = b32[(acc << (5 - bits)) & 31];
	out[o] = '\0';
}

long opt_base32_decode(uint8_t *out, size_t outmax, const char *in, size_t inlen)
{
	uint32_t acc = 0;
	int bits = 0;
	size_t i, o = 0;

	for (i = 0; i < inlen; i++) {
		int v;
		char c = in[i];

		if (c >= 'a' && c <= 'z')
			v = c - 'a';
		else if (c >= '2' && c <= '7')
			v = c - '2' + 26;
		else
			return -1;
		acc = (acc << 5) | (uint32_t)v;
		bits += 5;
		if (bits >= 8) {
			if (o >= outmax)
				return -1;
			out[o++] = (uint8_t)(acc >> (bits - 8));
			bits -= 8;
		}
	}
	return (long)o;
}

void opt_id_new(char out[OPT_ID_LEN + 1])
{
	uint8_t raw[OPT_ID_BYTES];

	randombytes_buf(raw, sizeof(raw));
	opt_base32_encode(out, raw, sizeof(raw));
}

_Static_assert(OPT_ID_MAX == 64, "OPT_ID_RULE names the longest ID");

int opt_id_valid(const char *s)
{
	size_t n = 0;

	if (!s)
		return 0;
	for (; s[n]; n++) {
		char c = s[n];
		if (!((c >= 'a' && c <= 'z') || (c >= '2' && c <= '7')))
			return 0;
		if (n >= OPT_ID_MAX)
			return 0;
	}
	return n >= 2;
}

void opt_hex(char *out, const uint8_t *in, size_t len)
{
	static const char hx[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < len; i++) {
		out[2 * i] = hx[in[i] >> 4];
		out[2 * i + 1] = hx[in[i] & 15];
	}
	out[2 * len] = '\0';
}

/* SHA-256 is OpenSSL's, not libsodium's: it uses the CPU's SHA
 * extensions where there are some (1.7 GB/s against 0.3 GB/s here), and
 * every block and log entry is hashed.  The low-level API is deprecated in
 * 3.0 but has no provider lookup per call. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
_Static_assert(sizeof(SHA256_CTX) <= sizeof(struct opt_sha256), "sha256 state too large");

void opt_sha256_hex(char out[OPT_SHA256_HEX + 1], const void *data, size_t len)
{
	uint8_t h[SHA256_DIGEST_LENGTH];

	SHA256(data, len, h);
	opt_hex(out, h, sizeof(h));
}

void opt_sha256_init(struct opt_sha256 *h)
{
	SHA256_Init((SHA256_CTX *)h->state);
}

void opt_sha256_update(struct opt_sha256 *h, const void *data, size_t len)
{
	SHA256_Update((SHA256_CTX *)h->state, data, len);
}

void opt_sha256_final_hex(struct opt_sha256 *h, char out[OPT_SHA256_HEX + 1])
{
	uint8_t d[SHA256_DIGEST_LENGTH];

	SHA256_Final(d, (SHA256_CTX *)h->state);
	opt_hex(out, d, sizeof(d));
}
#pragma GCC diagnostic pop

/* SHA-1: OpenSSL's low-level API is deprecated in 3.0 but is still the
 * fast path (no provider lookup per object). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
_Static_assert(sizeof(SHA_CTX) <= sizeof(struct opt_sha1), "SHA_CTX too large");

void opt_sha1_init(struct opt_sha1 *c)
{
	SHA1_Init((SHA_CTX *)c->ctx);
}

void opt_sha1_update(struct opt_sha1 *c, const void *data, size_t len)
{
	SHA1_Update((SHA_CTX *)c->ctx, data, len);
}

void opt_sha1_final(struct opt_sha1 *c, uint8_t out[20])
{
	SHA1_Final(out, (SHA_CTX *)c->ctx);
}
#pragma GCC diagnostic pop

int64_t opt_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint32_t opt_random(uint32_t n)
{
	return n ? randombytes_uniform(n) : 0;
}

void opt_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0)
		;
}

unsigned opt_backoff_ms(unsigned attempt, unsigned base, unsigned cap)
{
	unsigned long d = base;

	while (attempt-- > 0 && d < cap)
		d *= 2;
	if (d > cap)
		d = cap;
	if (d < 2)
		return (unsigned)d;
	return (unsigned)(d / 2 + 1 + opt_random((uint32_t)(d - d / 2)));
}

void opt_fault(const char *point)
{
	static long hits;
	static const char *spec;
	static int init;
	const char *at;
	size_t n;

	if (!init) {
		spec = getenv("OPT_TEST_CRASH");
		init = 1;
	}
	if (!spec || !*spec)
		return;
	at = strchr(spec, '@');
	n = at ? (size_t)(at - spec) : strlen(spec);
	if (strlen(point) != n || strncmp(point, spec, n) != 0)
		return;
	if (++hits < (at ? atol(at + 1) : 1))
		return;
	kill(getpid(), SIGKILL);
	_exit(137);
}

/* The length of the UTF-8 sequence at s that is valid and not a control
 * character (C1), or 0. */
static size_t utf8_ok(const unsigned char *s)
{
	unsigned c = s[0], v, i;
	size_t n;

	if (c < 0xC2 || c > 0xF4)
		return 0;
	n = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
	v = c & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07);
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xC0) != 0x80)  /* a NUL ends the loop here too */
			return 0;
		v = (v << 6) | (s[i] & 0x3F);
	}
	if ((n == 3 && v < 0x800) || (n == 4 && v < 0x10000) || (v >= 0xD800 && v <= 0xDFFF) || v > 0x10FFFF ||
	    v < 0xA0)
		return 0;
	return n;
}

const char *opt_esc(const char *s)
{
	static _Thread_local char slot[OPT_ESC_SLOTS][4 * OPT_ESC_SHOWN + 4];
	static _Thread_local unsigned next;
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;
	char *out = slot[next++ % OPT_ESC_SLOTS], *o = out;
	size_t shown = 0;

	if (!s)
		return "(null)";
	while (*p && shown < OPT_ESC_SHOWN) {
		size_t n = *p >= 0x80 ? utf8_ok(p) : 0;
		if (n) {
			if (shown + n > OPT_ESC_SHOWN)
				break;
			memcpy(o, p, n);
			o += n;
			p += n;
			shown += n;
		} else if (*p >= 0x20 && *p < 0x7f && *p != '\\') {
			*o++ = (char)*p++;
			shown++;
		} else {
			*o++ = '\\';
			if (*p == '\\') {
				*o++ = '\\';
			} else {
				*o++ = 'x';
				*o++ = hex[*p >> 4];
				*o++ = hex[*p & 15];
			}
			p++;
			shown++;
		}
	}
	if (*p) {
		memcpy(o, "...", 3);
		o += 3;
	}
	*o = '\0';
	return out;
}

int opt_grow(void **p, size_t *cap, size_t need, size_t size)
{
	size_t n = *cap ? *cap : 16;
	void *np;

	if (need <= *cap)
		return 0;
	while (n < need) {
		if (n > SIZE_MAX / 2)
			return opt_error_oom();
		n *= 2;
	}
	if (size && n > SIZE_MAX / size)
		return opt_error_oom();
	if (!(np = realloc(*p, n * size)))
		return opt_error_oom();
	*p = np;
	*cap = n;
	return 0;
}
