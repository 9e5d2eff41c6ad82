/* Weights files of a library written by `graphc export`: NAME_save_weights and
 * NAME_load_weights.
 *
 * The format is graphc.save's (graphc/serialization.py), a safetensors file:
 *     u64 little-endian N | N bytes of JSON header, space-padded | the tensors' bytes
 * The header maps each tensor's name to its dtype, shape and byte range; "__metadata__"
 * holds a structure record for graphc.load and a CRC-32 of the data. Saved tensors carry
 * the model's state_dict names ("conv1.weight"), so a safetensors reader hands PyTorch its
 * state_dict; a training library adds the optimizer's state ("optimizer/state/0/...") and
 * graphc.load returns {"model": ..., "optimizer": ...}.
 *
 * Loading accepts any safetensors file with the model's tensors: one this library saved, a
 * graphc.save of a state_dict, a `graphc train` checkpoint (its "model/" names), or a plain
 * safetensors state_dict. The optimizer's state of a parameter is loaded if the file has all
 * of it, else reset (as a new optimizer has none). Everything is checked before anything
 * changes: a file that fails leaves the context as it was.
 *
 * Saving writes a temporary file next to the target, fsyncs it and renames it over the
 * target: a crash leaves the old file or the new one, never a mix, and a failed call leaves
 * no file behind.
 */
#define _GNU_SOURCE
#include "runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_HEADER (100u << 20) /* as graphc/serialization.py: larger is not a header */
#define MAX_NAME 4096

/* ---- CRC-32 (zlib's polynomial, as graphc.save) ------------------------------------------ */

static void crc_table(uint32_t table[256]) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
}

static uint32_t crc_update(const uint32_t table[256], uint32_t crc, const unsigned char *p,
                           size_t n) {
    crc = ~crc;
    while (n--) crc = table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

/* ---- JSON, as much as a safetensors header needs ----------------------------------------- */

struct reader {
    const char *p, *start, *end;
};

static void skip_space(struct reader *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
        r->p++;
}

static int eat(struct reader *r, char ch) {
    skip_space(r);
    if (r->p < r->end && *r->p == ch) {
        r->p++;
        return 1;
    }
    return 0;
}

static int hex4(struct reader *r, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        if (r->p >= r->end) return 0;
        char ch = *r->p++;
        int d = ch >= '0' && ch <= '9'   ? ch - '0'
                : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                         : -1;
        if (d < 0) return 0;
        v = v << 4 | (uint32_t)d;
    }
    *out = v;
    return 1;
}

/* A string into out (UTF-8, NUL-terminated; longer than cap - 1 bytes fails), or skipped
 * when out is NULL. */
static int read_string(struct reader *r, char *out, size_t cap) {
    skip_space(r);
    if (r->p >= r->end || *r->p != '"') return 0;
    r->p++;
    size_t n = 0;
    while (r->p < r->end) {
        unsigned char ch = (unsigned char)*r->p++;
        unsigned char bytes[4];
        size_t k = 1;
        bytes[0] = ch;
        if (ch == '"') {
            if (out) out[n] = 0;
            return 1;
        }
        if (ch < 0x20) return 0;
        if (ch == '\\') {
            if (r->p >= r->end) return 0;
            char e = *r->p++;
            uint32_t cp;
            switch (e) {
            case '"': case '\\': case '/': cp = (uint32_t)e; break;
            case 'b': cp = '\b'; break;
            case 'f': cp = '\f'; break;
            case 'n': cp = '\n'; break;
            case 'r': cp = '\r'; break;
            case 't': cp = '\t'; break;
            case 'u':
                if (!hex4(r, &cp)) return 0;
                if (cp >= 0xD800 && cp < 0xDC00) { /* a surrogate pair */
                    uint32_t low;
                    if (r->end - r->p < 6 || r->p[0] != '\\' || r->p[1] != 'u') return 0;
                    r->p += 2;
                    if (!hex4(r, &low) || low < 0xDC00 || low >= 0xE000) return 0;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                } else if (cp >= 0xDC00 && cp < 0xE000) {
                    return 0;
                }
                break;
            default: return 0;
            }
            if (cp < 0x80) {
                bytes[0] = (unsigned char)cp;
            } else if (cp < 0x800) {
                bytes[0] = (unsigned char)(0xC0 | cp >> 6);
                bytes[1] = (unsigned char)(0x80 | (cp & 0x3F));
                k = 2;
            } else if (cp < 0x10000) {
                bytes[0] = (unsigned char)(0xE0 | cp >> 12);
                bytes[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
                bytes[2] = (unsigned char)(0x80 | (cp & 0x3F));
                k = 3;
            } else {
                bytes[0] = (unsigned char)(0xF0 | cp >> 18);
                bytes[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
                bytes[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
                bytes[3] = (unsigned char)(0x80 | (cp & 0x3F));
                k = 4;
            }
        }
        if (out) {
            if (n + k >= cap) return 0;
            memcpy(out + n, bytes, k);
        }
        n += k;
    }
    return 0;
}

/* A string into buf if it fits, else skipped (buf empty): a key or value this reader does
 * not need may be long. */
static int read_short(struct reader *r, char *buf, size_t cap) {
    const char *at = r->p;
    if (read_string(r, buf, cap)) return 1;
    r->p = at;
    buf[0] = 0;
    return read_string(r, NULL, 0);
}

/* A non-negative integer (sizes and offsets; graphc and safetensors write plain digits). */
static int read_count(struct reader *r, int64_t *out) {
    skip_space(r);
    int64_t v = 0;
    const char *first = r->p;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
        if (v > (INT64_MAX - 9) / 10) return 0;
        v = v * 10 + (*r->p++ - '0');
    }
    if (r->p == first) return 0;
    if (r->p < r->end && (*r->p == '.' || *r->p == 'e' || *r->p == 'E')) return 0;
    *out = v;
    return 1;
}

static int skip_value(struct reader *r, int depth) {
    skip_space(r);
    if (r->p >= r->end || depth > 64) return 0;
    char ch = *r->p;
    if (ch == '"') return read_string(r, NULL, 0);
    if (ch == '{' || ch == '[') {
        char close = ch == '{' ? '}' : ']';
        r->p++;
        if (eat(r, close)) return 1;
        do {
            if (ch == '{' && !(read_string(r, NULL, 0) && eat(r, ':'))) return 0;
            if (!skip_value(r, depth + 1)) return 0;
        } while (eat(r, ','));
        return eat(r, close);
    }
    static const char *const words[] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(words[i]);
        if ((size_t)(r->end - r->p) >= n && strncmp(r->p, words[i], n) == 0) {
            r->p += n;
            return 1;
        }
    }
    const char *first = r->p;
    while (r->p < r->end && strchr("+-0123456789.eE", *r->p)) r->p++;
    return r->p > first;
}

/* ---- reading a file ------------------------------------------------------------------------ */

struct file_tensor {
    char *name;
    char dtype[16];
    int ndim;
    int64_t shape[GRT_MAX_DIMS];
    int64_t begin, end;
};

struct weights_file {
    const char *path;
    unsigned char *bytes;
    size_t size;
    const unsigned char *data;
    size_t data_bytes;
    struct file_tensor *tensors;
    int n, cap;
    char format[32], version[16], crc32[16], data_bytes_text[32];
};

static void free_file(struct weights_file *f) {
    for (int i = 0; i < f->n; i++) free(f->tensors[i].name);
    free(f->tensors);
    free(f->bytes);
}

static int read_whole(struct grt_ctx *c, const char *fn, struct weights_file *f) {
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return grt_fail(c, GRT_ERR_IO, fn, "cannot open %s: %s", f->path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return grt_fail(c, GRT_ERR_IO, fn, "%s is not a regular file (a weights file)", f->path);
    }
    f->size = (size_t)st.st_size;
    f->bytes = malloc(f->size + 1);
    if (!f->bytes) {
        close(fd);
        return grt_fail(c, GRT_ERR_MEMORY, fn, "no memory to read %s (%zu bytes)", f->path,
                        f->size);
    }
    size_t got = 0;
    while (got < f->size) {
        ssize_t n = read(fd, f->bytes + got, f->size - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
    }
    int err = errno;
    close(fd);
    if (got != f->size)
        return grt_fail(c, GRT_ERR_IO, fn, "cannot read %s: %s", f->path,
                        got < f->size && err ? strerror(err) : "it changed while being read");
    return GRT_OK;
}

static int corrupt(struct grt_ctx *c, const char *fn, const struct weights_file *f,
                   const char *format, ...) __attribute__((format(printf, 4, 5)));

static int corrupt(struct grt_ctx *c, const char *fn, const struct weights_file *f,
                   const char *format, ...) {
    char what[512];
    va_list ap;
    va_start(ap, format);
    vsnprintf(what, sizeof what, format, ap);
    va_end(ap);
    return grt_fail(c, GRT_ERR_FORMAT, fn,
                    "%s is not a readable weights file: %s. If it was being written when a "
                    "program stopped, use an earlier copy; otherwise save it again",
                    f->path, what);
}

static int parse_tensor(struct reader *r, struct file_tensor *t) {
    int dtype = 0, shape = 0, offsets = 0;
    if (!eat(r, '{')) return 0;
    if (eat(r, '}')) return 0;
    do {
        char key[32];
        if (!read_short(r, key, sizeof key) || !eat(r, ':')) return 0;
        if (strcmp(key, "dtype") == 0) {
            if (!read_string(r, t->dtype, sizeof t->dtype)) return 0;
            dtype = 1;
        } else if (strcmp(key, "shape") == 0) {
            if (!eat(r, '[')) return 0;
            t->ndim = 0;
            if (!eat(r, ']')) {
                do {
                    if (t->ndim == GRT_MAX_DIMS || !read_count(r, &t->shape[t->ndim++])) return 0;
                } while (eat(r, ','));
                if (!eat(r, ']')) return 0;
            }
            shape = 1;
        } else if (strcmp(key, "data_offsets") == 0) {
            if (!(eat(r, '[') && read_count(r, &t->begin) && eat(r, ',') &&
                  read_count(r, &t->end) && eat(r, ']')))
                return 0;
            offsets = 1;
        } else if (!skip_value(r, 1)) {
            return 0;
        }
    } while (eat(r, ','));
    return eat(r, '}') && dtype && shape && offsets;
}

static int parse_metadata(struct reader *r, struct weights_file *f) {
    if (!eat(r, '{')) return 0;
    if (eat(r, '}')) return 1;
    do {
        char key[32];
        char *into = NULL;
        size_t cap = 0;
        if (!read_short(r, key, sizeof key) || !eat(r, ':')) return 0;
        if (strcmp(key, "format") == 0) into = f->format, cap = sizeof f->format;
        if (strcmp(key, "version") == 0) into = f->version, cap = sizeof f->version;
        if (strcmp(key, "crc32") == 0) into = f->crc32, cap = sizeof f->crc32;
        if (strcmp(key, "data_bytes") == 0)
            into = f->data_bytes_text, cap = sizeof f->data_bytes_text;
        if (into ? !read_short(r, into, cap) : !skip_value(r, 1)) return 0;
    } while (eat(r, ','));
    return eat(r, '}');
}

static size_t dtype_size(const char *dtype) {
    static const struct {
        const char *name;
        size_t size;
    } sizes[] = {{"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4},
                 {"I16", 2}, {"I8", 1},  {"U64", 8}, {"U32", 4},  {"U16", 2}, {"U8", 1},
                 {"BOOL", 1}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (strcmp(dtype, sizes[i].name) == 0) return sizes[i].size;
    return 0;
}

static int parse_file(struct grt_ctx *c, const char *fn, struct weights_file *f) {
    if (f->size < 8) return corrupt(c, fn, f, "it is only %zu bytes long", f->size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | f->bytes[i];
    if (n > MAX_HEADER || n > f->size - 8)
        return corrupt(c, fn, f, "its header length is impossible (truncated, or not a "
                                 "safetensors file)");
    struct reader r = {(const char *)f->bytes + 8, (const char *)f->bytes + 8,
                       (const char *)f->bytes + 8 + n};
    f->data = f->bytes + 8 + n;
    f->data_bytes = f->size - 8 - (size_t)n;
    int ok = eat(&r, '{');
    if (ok && !eat(&r, '}')) {
        do {
            char name[MAX_NAME];
            if (!(ok = read_string(&r, name, sizeof name) && eat(&r, ':'))) break;
            if (strcmp(name, "__metadata__") == 0) {
                if (!(ok = parse_metadata(&r, f))) break;
                continue;
            }
            if (f->n == f->cap) {
                int cap = f->cap ? 2 * f->cap : 64;
                struct file_tensor *more = realloc(f->tensors, (size_t)cap * sizeof *more);
                if (!more) return grt_fail(c, GRT_ERR_MEMORY, fn, "no memory to read %s", f->path);
                f->tensors = more;
                f->cap = cap;
            }
            struct file_tensor *t = &f->tensors[f->n];
            memset(t, 0, sizeof *t);
            if (!(t->name = strdup(name)))
                return grt_fail(c, GRT_ERR_MEMORY, fn, "no memory to read %s", f->path);
            f->n++;
            if (!(ok = parse_tensor(&r, t)))
                return corrupt(c, fn, f, "the entry for tensor '%s' is malformed", name);
        } while (eat(&r, ','));
        ok = ok && eat(&r, '}');
    }
    skip_space(&r);
    if (!ok || r.p != r.end)
        return corrupt(c, fn, f, "its header is not valid JSON (near byte %ld)",
                       (long)(r.p - r.start) + 8);
    for (int i = 0; i < f->n; i++) {
        struct file_tensor *t = &f->tensors[i];
        size_t item = dtype_size(t->dtype);
        uint64_t count = 1;
        for (int d = 0; d < t->ndim; d++)
            if (__builtin_mul_overflow(count, (uint64_t)t->shape[d], &count)) count = UINT64_MAX;
        uint64_t want;
        if (__builtin_mul_overflow(count, (uint64_t)item, &want)) want = UINT64_MAX;
        if (t->begin > t->end || (uint64_t)t->end > f->data_bytes ||
            (item && (uint64_t)(t->end - t->begin) != want))
            return corrupt(c, fn, f, "tensor '%s' lies outside the file (truncated?)", t->name);
    }
    if (strcmp(f->format, "graphc") == 0) { /* graphc.save's: also sized and checksummed */
        if (strcmp(f->version, "1") != 0)
            return grt_fail(c, GRT_ERR_FORMAT, fn,
                            "%s was written by a newer graphc (format version %s); export "
                            "the library again with that graphc",
                            f->path, f->version);
        char *end;
        unsigned long long promised = strtoull(f->data_bytes_text, &end, 10);
        if (!f->data_bytes_text[0] || *end || promised != f->data_bytes)
            return corrupt(c, fn, f, "it has %zu data bytes, its header promises %s",
                           f->data_bytes, f->data_bytes_text);
        uint32_t table[256];
        crc_table(table);
        unsigned long crc = strtoul(f->crc32, &end, 16);
        if (!f->crc32[0] || *end || crc != crc_update(table, 0, f->data, f->data_bytes))
            return corrupt(c, fn, f, "the checksum of its data does not match (the bytes "
                                     "were damaged)");
    }
    return GRT_OK;
}

/* ---- loading ------------------------------------------------------------------------------- */

static void shape_text(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t used = 0;
    int n = snprintf(buf, cap, "[");
    used = n > 0 ? (size_t)n : 0;
    for (int d = 0; d < ndim && used < cap; d++) {
        n = snprintf(buf + used, cap - used, "%s%lld", d ? ", " : "", (long long)shape[d]);
        used += n > 0 ? (size_t)n : 0;
    }
    if (used < cap) snprintf(buf + used, cap - used, "]");
}

static const struct file_tensor *find(const struct weights_file *f, const struct grt_tensor *t) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->tensors[i].name, t->name) == 0 ||
            (t->alias && strcmp(f->tensors[i].name, t->alias) == 0))
            return &f->tensors[i];
    return NULL;
}

static int fits(const struct file_tensor *ft, const struct grt_tensor *t) {
    if (strcmp(ft->dtype, t->dtype) != 0 || ft->ndim != t->ndim) return 0;
    for (int d = 0; d < t->ndim; d++)
        if (ft->shape[d] != t->shape[d]) return 0;
    return 1;
}

static int mismatch(struct grt_ctx *c, const char *fn, const struct weights_file *f,
                    const struct file_tensor *ft, const struct grt_tensor *t) {
    char theirs[256], ours[256];
    shape_text(theirs, sizeof theirs, ft->ndim, ft->shape);
    shape_text(ours, sizeof ours, t->ndim, t->shape);
    return grt_fail(c, GRT_ERR_MODEL, fn,
                    "%s holds tensor '%s' as %s %s, but this model's is %s %s: it holds the "
                    "weights of another model (or of this one with other sizes)",
                    f->path, ft->name, ft->dtype, theirs, t->dtype, ours);
}

static int missing(struct grt_ctx *c, const char *fn, const struct weights_file *f,
                   const struct grt_tensor *t) {
    char ours[256], some[256] = "";
    size_t used = 0;
    shape_text(ours, sizeof ours, t->ndim, t->shape);
    for (int i = 0; i < f->n && i < 4; i++) {
        int n = snprintf(some + used, sizeof some - used, "%s'%s'", i ? ", " : "",
                         f->tensors[i].name);
        if (n < 0 || (size_t)n >= sizeof some - used) break;
        used += (size_t)n;
    }
    return grt_fail(c, GRT_ERR_MODEL, fn,
                    "%s has no tensor '%s' (%s %s): it holds the weights of another model "
                    "(its tensors: %s%s)",
                    f->path, t->name, t->dtype, ours, f->n ? some : "none",
                    f->n > 4 ? ", ..." : "");
}

int grt_load_weights(const struct grt_model *m, struct grt_ctx *c, const char *fn,
                     const char *path) {
    int rc = grt_begin(m, c, fn);
    if (rc) return rc;
    if (!path || !*path) {
        rc = grt_fail(c, GRT_ERR_ARGUMENT, fn, "path is %s: pass the weights file to read",
                      path ? "empty" : "NULL");
        grt_leave(c);
        return rc;
    }
    struct weights_file f = {0};
    f.path = path;
    const struct file_tensor **found = calloc((size_t)m->n_tensors + 1, sizeof *found);
    unsigned char *whole = calloc((size_t)m->n_entries + 1, 1);
    if (!found || !whole) {
        rc = grt_fail(c, GRT_ERR_MEMORY, fn, "no memory to read %s", path);
        goto done;
    }
    if ((rc = read_whole(c, fn, &f)) || (rc = parse_file(c, fn, &f))) goto done;
    /* Check everything first: a file that fails changes nothing. */
    for (int i = 0; i < m->n_tensors; i++) {
        const struct grt_tensor *t = &m->tensors[i];
        if (!t->name) continue;
        found[i] = find(&f, t);
        if (found[i] && !fits(found[i], t)) {
            rc = mismatch(c, fn, &f, found[i], t);
            goto done;
        }
        if (!found[i] && t->required) {
            rc = missing(c, fn, &f, t);
            goto done;
        }
    }
    for (int e = 0; e < m->n_entries; e++) {
        const struct grt_entry *entry = &m->entries[e];
        int have = 0;
        for (int i = entry->first; i < entry->first + entry->count; i++) have += found[i] != NULL;
        if (have && have < entry->count) {
            const struct grt_tensor *t = &m->tensors[entry->first];
            for (int i = entry->first; i < entry->first + entry->count; i++)
                if (!found[i]) t = &m->tensors[i];
            rc = grt_fail(c, GRT_ERR_MODEL, fn,
                          "%s has only part of one parameter's optimizer state (no '%s'): "
                          "it was saved by another optimizer, or damaged",
                          path, t->name);
            goto done;
        }
        whole[e] = have == entry->count;
    }
    for (int i = 0; i < m->n_tensors; i++) {
        const struct grt_tensor *t = &m->tensors[i];
        if (found[i])
            memcpy(c->state + t->offset, f.data + found[i]->begin, (size_t)t->nbytes);
        else if (t->name && t->entry >= 0) /* no state: the optimizer starts afresh */
            memset(c->state + t->offset, 0, (size_t)t->nbytes);
    }
    memcpy(c->present, whole, (size_t)m->n_entries);
done:
    free(found);
    free(whole);
    free_file(&f);
    grt_leave(c);
    return rc;
}

/* ---- saving -------------------------------------------------------------------------------- */

struct text {
    char *p;
    size_t len, cap;
    int failed;
};

static void put(struct text *t, const char *s, size_t n) {
    if (t->failed) return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (cap < t->len + n + 1) cap *= 2;
        char *more = realloc(t->p, cap);
        if (!more) {
            t->failed = 1;
            return;
        }
        t->p = more;
        t->cap = cap;
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = 0;
}

static void puts_text(struct text *t, const char *s) { put(t, s, strlen(s)); }

static void put_format(struct text *t, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

static void put_format(struct text *t, const char *format, ...) {
    char buf[64];
    va_list ap;
    va_start(ap, format);
    int n = vsnprintf(buf, sizeof buf, format, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf) t->failed = 1;
    else put(t, buf, (size_t)n);
}

static int saved(const struct grt_ctx *c, const struct grt_tensor *t) {
    return t->entry < 0 || c->present[t->entry];
}

/* The header of a saved file, as graphc.save writes it. */
static void header(const struct grt_model *m, const struct grt_ctx *c, struct text *h) {
    uint32_t table[256];
    uint32_t crc = 0;
    int64_t at = 0;
    crc_table(table);
    puts_text(h, "{");
    for (int k = 0; k < m->n_saved; k++) {
        const struct grt_tensor *t = &m->tensors[m->file_order[k]];
        if (!saved(c, t)) continue;
        puts_text(h, t->header);
        put_format(h, "%lld,%lld]},", (long long)at, (long long)(at + t->nbytes));
        at += t->nbytes;
        crc = crc_update(table, crc, c->state + t->offset, (size_t)t->nbytes);
    }
    puts_text(h, "\"__metadata__\":{\"format\":\"graphc\",\"version\":\"1\",\"tree\":\"");
    for (int i = 0; i < m->n_pieces; i++) {
        const struct grt_piece *p = &m->pieces[i];
        if (p->kind == GRT_PIECE_TEXT) puts_text(h, p->text);
        if (p->kind == GRT_PIECE_LR) put_format(h, "%.17g", c->lr_last[p->group]);
        if (p->kind == GRT_PIECE_STATE) {
            int any = 0;
            for (int e = 0; e < m->n_entries; e++) {
                if (!c->present[e]) continue;
                puts_text(h, any ? "," : m->state_open);
                puts_text(h, m->entries[e].fragment);
                any = 1;
            }
            puts_text(h, any ? m->state_close : m->state_empty);
        }
    }
    put_format(h, "\",\"crc32\":\"%08x\",\"data_bytes\":\"%lld\"}}", crc, (long long)at);
    while ((8 + h->len) % 8) puts_text(h, " "); /* the data starts 8-byte aligned */
}

static int write_all(int fd, const void *p, size_t n) {
    const unsigned char *b = p;
    while (n) {
        ssize_t k = write(fd, b, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return 0;
        b += k;
        n -= (size_t)k;
    }
    return 1;
}

static void sync_directory(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(dir);
}

int grt_save_weights(const struct grt_model *m, struct grt_ctx *c, const char *fn,
                     const char *path) {
    int rc = grt_begin(m, c, fn);
    if (rc) return rc;
    if (!path || !*path) {
        rc = grt_fail(c, GRT_ERR_ARGUMENT, fn, "path is %s: pass the file to write",
                      path ? "empty" : "NULL");
        grt_leave(c);
        return rc;
    }
    struct text h = {0};
    header(m, c, &h);
    size_t n = strlen(path) + 64;
    char *tmp = malloc(n);
    if (h.failed || !tmp) {
        rc = grt_fail(c, GRT_ERR_MEMORY, fn, "no memory to write %s", path);
        goto done;
    }
    static unsigned counter;
    int fd = -1;
    for (int attempt = 0; fd < 0 && attempt < 100; attempt++) {
        unsigned k = __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED);
        snprintf(tmp, n, "%s.tmp.%ld.%u", path, (long)getpid(), k);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) {
        rc = grt_fail(c, GRT_ERR_IO, fn, "cannot write %s: %s%s", path, strerror(errno),
                      errno == ENOENT ? " (does its directory exist?)" : "");
        goto done;
    }
    unsigned char length[8];
    for (int i = 0; i < 8; i++) length[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
    int ok = write_all(fd, length, 8) && write_all(fd, h.p, h.len);
    for (int k = 0; ok && k < m->n_saved; k++) {
        const struct grt_tensor *t = &m->tensors[m->file_order[k]];
        if (saved(c, t)) ok = write_all(fd, c->state + t->offset, (size_t)t->nbytes);
    }
    int err = ok ? 0 : errno;
    if (ok && fsync(fd) != 0) ok = 0, err = errno;
    if (close(fd) != 0 && ok) ok = 0, err = errno;
    if (ok && rename(tmp, path) != 0) ok = 0, err = errno;
    if (!ok) {
        unlink(tmp);
        rc = grt_fail(c, GRT_ERR_IO, fn, "cannot write %s: %s", path,
                      err ? strerror(err) : "the disk took only part of it");
        goto done;
    }
    sync_directory(path);
done:
    free(tmp);
    free(h.p);
    grt_leave(c);
    return rc;
}
