/* util.h - encodings, hashes and identifiers.
 *
 * base32 is RFC 4648 with the lowercase alphabet a-z2-7 and no padding.
 * Block and transaction IDs are 16 random bytes (128 bits), base32: 26
 * characters.  SHA-256 comes from libsodium; SHA-1 (for git object and pack
 * checksums only, never for integrity) is our own small implementation.
 */
#ifndef OPT_UTIL_H
#define OPT_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define OPT_ID_BYTES 16
#define OPT_ID_LEN 26          /* base32 of 16 bytes */
#define OPT_ID_MAX 64          /* longest ID accepted as input */
#define OPT_SHA256_HEX 64

/* The most bytes one stored object (a block, a git tree or commit) may
 * have: larger ones are refused when written, and refused unread (before
 * any inflating) when read or fetched, so that a small object that
 * inflates to gigabytes costs nothing. */
#define OPT_BLOCK_MAX ((size_t)256 << 20)

/* Initialise libsodium; safe to call many times.  0 or OPT_EIO. */
int opt_util_init(void);

/* Encode len bytes as lowercase base32 into out (NUL-terminated).
 * out must hold opt_base32_len(len) + 1 bytes. */
size_t opt_base32_len(size_t len);
void opt_base32_encode(char *out, const uint8_t *in, size_t len);

/* Decode base32 text; returns the number of bytes written to out or -1 on
 * invalid input (characters outside a-z2-7, or more than outmax bytes). */
long opt_base32_decode(uint8_t *out, size_t outmax, const char *in, size_t inlen);

/* A new random ID (OPT_ID_LEN characters plus NUL) into out. */
void opt_id_new(char out[OPT_ID_LEN + 1]);

/* 1 if s is a valid ID: 2..OPT_ID_MAX characters of a-z, 2-7; 0 otherwise.
 * (No '/', no '.', nothing a path could misuse.) */
int opt_id_valid(const char *s);

/* The rule of opt_id_valid in words, for messages about invalid IDs. */
#define OPT_ID_RULE "block IDs are base32: a-z and 2-7, 2 to 64 characters"

/* SHA-256 of data as 64 lowercase hex characters plus NUL. */
void opt_sha256_hex(char out[OPT_SHA256_HEX + 1], const void *data, size_t len);

/* Streaming SHA-256. */
struct opt_sha256 { uint8_t state[128] __attribute__((aligned(16))); };
void opt_sha256_init(struct opt_sha256 *h);
void opt_sha256_update(struct opt_sha256 *h, const void *data, size_t len);
void opt_sha256_final_hex(struct opt_sha256 *h, char out[OPT_SHA256_HEX + 1]);

/* SHA-1 (git object IDs and pack trailers), by OpenSSL's libcrypto (its
 * SHA-NI code is several times faster than a portable C version). */
struct opt_sha1 {
	uint64_t ctx[16];  /* an OpenSSL SHA_CTX (96 bytes) */
};
void opt_sha1_init(struct opt_sha1 *c);
void opt_sha1_update(struct opt_sha1 *c, const void *data, size_t len);
void opt_sha1_final(struct opt_sha1 *c, uint8_t out[20]);

/* Lowercase hex of len bytes into out (2*len+1 bytes). */
void opt_hex(char *out, const uint8_t *in, size_t len);

/* Text from outside (an ID, a name, a path, an operand) made safe to
 * quote in a message: control characters (below 0x20, DEL and the C1
 * controls U+0080..U+009F), bytes that are not UTF-8 and backslashes are
 * written as \xNN (a backslash as \\), so that no escape sequence
 * reaches the terminal; at most OPT_ESC_SHOWN bytes of s are shown, then
 * "...".  The result lives in one of OPT_ESC_SLOTS thread-local buffers
 * used in turn: it stays valid for that many more calls (enough for the
 * arguments of one message).  NULL gives "(null)". */
#define OPT_ESC_SHOWN 200
#define OPT_ESC_SLOTS 8
const char *opt_esc(const char *s);

/* Milliseconds since the Unix epoch. */
int64_t opt_now_ms(void);

/* A uniformly random number in [0, n). */
uint32_t opt_random(uint32_t n);

/* Sleep for ms milliseconds. */
void opt_sleep_ms(unsigned ms);

/* Jittered exponential backoff for attempt (0-based): a delay in
 * (0.5*d, d] where d = min(base * 2^attempt, cap), in milliseconds. */
unsigned opt_backoff_ms(unsigned attempt, unsigned base, unsigned cap);

/* Fault injection for the crash tests: when $OPT_TEST_CRASH names this
 * point ("point", or "point@N" for its N-th passage), the process kills
 * itself with SIGKILL there.  Costs one getenv when unset. */
void opt_fault(const char *point);

/* Grows the array *p of elements of size bytes so that it holds at least
 * need of them; *cap is its capacity in elements, doubled (from 16) as
 * needed. Returns 0, or OPT_EIO with "out of memory" set, *p and *cap
 * unchanged. Use it through OPT_ALLOC_GROW. */
int opt_grow(void **p, size_t *cap, size_t need, size_t size);

/* OPT_ALLOC_GROW(v, n, cap): make room in array v (any element type, its
 * capacity cap a size_t) for n elements, as git's ALLOC_GROW. */
#define OPT_ALLOC_GROW(v, n, cap) opt_grow((void **)&(v), &(cap), (n), sizeof(*(v)))

#endif
