/* The fixed part of a library written by `graphc export`: contexts (create, destroy), the CPU
 * check, the worker threads, running a step or a forward, status messages. Weights files are
 * weights.c's. The model itself is data (struct grt_model, in the generated model.c).
 *
 * Compiled with GRAPHC_THREADS=1, the library contains codegen/threads.py's pool (LLVM IR)
 * and this file starts its workers with pthreads, as graphc/threads.py does with Python
 * threads; with GRAPHC_THREADS=0 (a serial build) a parallel kernel runs its whole range on
 * the caller's thread and nothing needs pthreads. Either way the numbers are the same: the
 * pool's chunks depend only on the extent and the thread count, and every chunk writes its
 * own outputs.
 *
 * No call aborts or exits: every failure is an error code and a message (NAME_status).
 */
#define _GNU_SOURCE
#include "runtime.h"

#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#if GRAPHC_THREADS
#include <pthread.h>
#include <signal.h>
#endif
#if defined(__x86_64__)
#include <cpuid.h>
#include <xmmintrin.h>
#endif

#ifndef GRAPHC_THREADS
#error "compile with -DGRAPHC_THREADS=0 (serial) or -DGRAPHC_THREADS=1 (thread pool)"
#endif

#define MAX_THREADS 512          /* codegen/threads.py's MAX_CHUNKS */
#define DEFAULT_SPIN_US 100.0    /* as graphc/threads.py: idle workers spin, then sleep */
#define YIELD_US 4.0             /* a spinning thread yields about this often */
#define MXCSR_DEFAULT 0x1F80     /* round to nearest, no flush-to-zero, exceptions masked */

/* Messages of calls that had no context to keep them: a failed create, a NULL ctx, a call
 * refused because another thread was using the context. Per thread, so never shared. */
static _Thread_local char no_ctx_status[GRT_STATUS_BYTES] = "ok";

int grt_fail(struct grt_ctx *c, int code, const char *fn, const char *format, ...) {
    char *buf = c ? c->status : no_ctx_status;
    int n = snprintf(buf, GRT_STATUS_BYTES, "%s: ", fn);
    if (n < 0 || n >= GRT_STATUS_BYTES) n = 0;
    va_list ap;
    va_start(ap, format);
    vsnprintf(buf + n, GRT_STATUS_BYTES - (size_t)n, format, ap);
    va_end(ap);
    return code;
}

int grt_enter(struct grt_ctx *c, const char *fn) {
    if (__atomic_exchange_n(&c->busy, 1, __ATOMIC_ACQUIRE))
        return grt_fail(NULL, GRT_ERR_BUSY, fn,
                        "another thread is inside a call on this context; use one context "
                        "per thread, or one call at a time");
    strcpy(c->status, "ok");
    return GRT_OK;
}

int grt_begin(const struct grt_model *m, struct grt_ctx *c, const char *fn) {
    if (!c)
        return grt_fail(NULL, GRT_ERR_ARGUMENT, fn,
                        "ctx is NULL: create a context with %s_create first", m->name);
    if (c->m != m)
        return grt_fail(NULL, GRT_ERR_ARGUMENT, fn,
                        "ctx was created by another library; pass one %s_create made", m->name);
    return grt_enter(c, fn);
}

void grt_leave(struct grt_ctx *c) { __atomic_store_n(&c->busy, 0, __ATOMIC_RELEASE); }

const char *grt_status(const struct grt_ctx *c) { return c ? c->status : no_ctx_status; }

int grt_num_threads(const struct grt_ctx *c) { return c ? c->num_threads : 0; }

/* ---- the CPU check --------------------------------------------------------------------- */

#if defined(__x86_64__)
static int cpu_has(const struct grt_feature *f) {
    unsigned a, b, c, d;
    if (f->reg == 4) { /* state the OS saves: XCR0, readable when OSXSAVE is set */
        if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0;
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        (void)hi;
        return (lo & f->bit) == f->bit;
    }
    if (__get_cpuid_max(f->leaf & 0x80000000u, NULL) < f->leaf) return 0;
    if (f->subleaf > 0) { /* leaf 7's sub-leaves: eax of sub-leaf 0 is the last one */
        __cpuid_count(f->leaf, 0, a, b, c, d);
        if (a < f->subleaf) return 0;
    }
    __cpuid_count(f->leaf, f->subleaf, a, b, c, d);
    unsigned regs[4] = {a, b, c, d};
    return (regs[f->reg] >> f->bit) & 1u;
}
#else
static int cpu_has(const struct grt_feature *f) {
    (void)f;
    return 1;
}
#endif

#ifdef GRAPHC_SIMULATED_CPU
/* Tests build a library that believes the CPU has only the features in this list. */
static int simulated(const char *name) {
    const char *list = GRAPHC_SIMULATED_CPU;
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0) return 1;
        if (!end) break;
        p = end + 1;
    }
    return 0;
}
#define CPU_HAS(f) (cpu_has(f) && simulated((f)->name))
#else
#define CPU_HAS(f) cpu_has(f)
#endif

static int check_cpu(const struct grt_model *m, const char *fn) {
    char missing[512] = "";
    size_t used = 0;
    int count = 0;
    for (int i = 0; i < m->n_features; i++) {
        const struct grt_feature *f = &m->features[i];
        if (CPU_HAS(f)) continue;
        int n = snprintf(missing + used, sizeof missing - used, "%s%s", count ? ", " : "",
                         f->name);
        if (n > 0 && (size_t)n < sizeof missing - used) used += (size_t)n;
        count++;
    }
    if (!count) return GRT_OK;
    return grt_fail(NULL, GRT_ERR_CPU, fn,
                    "this CPU lacks %s, which lib%s.so was built for (%s); %s", missing,
                    m->name, m->target, m->retarget);
}

/* ---- threads ----------------------------------------------------------------------------- */

static int usable_cores(void) {
#ifdef CPU_COUNT
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
#endif
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static int thread_count(const struct grt_model *m, int asked, int *out, const char *fn) {
    if (asked < 0 || asked > MAX_THREADS)
        return grt_fail(NULL, GRT_ERR_ARGUMENT, fn,
                        "num_threads is %d: pass 1..%d, or 0 for the default", asked,
                        MAX_THREADS);
    if (asked == 0) {
        const char *env = getenv("GRAPHC_NUM_THREADS");
        if (env && *env) {
            char *end;
            long v = strtol(env, &end, 10);
            if (*end || v < 1 || v > MAX_THREADS)
                return grt_fail(NULL, GRT_ERR_ARGUMENT, fn,
                                "GRAPHC_NUM_THREADS=%s: expected a number of threads, 1..%d",
                                env, MAX_THREADS);
            asked = (int)v;
        } else {
            asked = m->default_threads > 0 ? m->default_threads : usable_cores();
        }
    }
    *out = GRAPHC_THREADS ? asked : 1;
    return GRT_OK;
}

#if GRAPHC_THREADS
/* codegen/threads.py's pool (see its docstring for the protocol). */
extern void graphc_parallel_for(void *pool, void *thunk, void *ctx, int64_t extent) GRT_HIDDEN;
extern void graphc_worker_main(void *pool, int64_t first_gen) GRT_HIDDEN;
extern void graphc_pool_init(void *pool, int64_t threads, int64_t spin,
                             int64_t yield_mask) GRT_HIDDEN;
extern int64_t graphc_pool_try_lock(void *pool) GRT_HIDDEN;
extern void graphc_pool_unlock(void *pool) GRT_HIDDEN;
extern void graphc_pool_shutdown(void *pool) GRT_HIDDEN;
extern int64_t graphc_pool_read(void *pool, int64_t slot) GRT_HIDDEN;
extern void graphc_pause_loop(void *pool, int64_t n) GRT_HIDDEN;

struct worker_arg {
    void *pool;
    int64_t first_gen;
};

static void *worker(void *p) {
    struct worker_arg *a = p;
    graphc_worker_main(a->pool, a->first_gen);
    return NULL;
}

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static double spin_us(void) {
    const char *env = getenv("GRAPHC_SPIN_US");
    if (env && *env) {
        char *end;
        double v = strtod(env, &end);
        if (!*end && v >= 0 && v <= 1e6) return v;
    }
    return DEFAULT_SPIN_US;
}

/* As graphc/threads.py's _reconfigure: calibrate the spin on an owned pool of one thread,
 * set the pool for n threads (still owned), start n - 1 workers, then release it. */
static int start_pool(const struct grt_model *m, struct grt_ctx *c, int n, const char *fn) {
    size_t bytes = ((size_t)m->pool_bytes + 63) / 64 * 64;
    c->pool = aligned_alloc(64, bytes);
    if (!c->pool) return grt_fail(NULL, GRT_ERR_MEMORY, fn, "no memory for the thread pool");
    memset(c->pool, 0, bytes);
    graphc_pool_init(c->pool, 1, 0, -1);
    if (n > 1) {
        const int64_t rounds = 20000;
        double best = 1e300;
        for (int i = 0; i < 3; i++) { /* a pause costs 10 to 150 cycles: measure it */
            double t0 = now_us();
            graphc_pause_loop(c->pool, rounds);
            double t = now_us() - t0;
            best = t < best ? t : best;
        }
        double rate = (double)rounds / (best > 1e-3 ? best : 1e-3); /* rounds per us */
        int64_t every = (int64_t)(YIELD_US * rate), mask = 1;
        if (every < 1) every = 1;
        while (mask < every) mask <<= 1; /* the power of two at or above `every` */
        int64_t spin = n > usable_cores() ? 0 : (int64_t)(spin_us() * rate);
        graphc_pool_init(c->pool, n, spin, mask - 1);
        int64_t first_gen = (int64_t)((uint64_t)graphc_pool_read(c->pool, m->job_slot) >> 32);
        pthread_t *threads = calloc((size_t)n - 1, sizeof *threads);
        struct worker_arg *args = calloc((size_t)n - 1, sizeof *args);
        if (!threads || !args) {
            free(threads);
            free(args);
            free(c->pool);
            c->pool = NULL;
            return grt_fail(NULL, GRT_ERR_MEMORY, fn, "no memory for %d worker threads", n - 1);
        }
        /* Workers take no signals: the program's handlers run on its own threads. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        int started = 0, err = 0;
        for (; started < n - 1; started++) {
            args[started] = (struct worker_arg){c->pool, first_gen};
            err = pthread_create(&threads[started], NULL, worker, &args[started]);
            if (err) break;
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (err) {
            graphc_pool_shutdown(c->pool);
            for (int i = 0; i < started; i++) pthread_join(threads[i], NULL);
            free(threads);
            free(args);
            free(c->pool);
            c->pool = NULL;
            return grt_fail(NULL, GRT_ERR_THREADS, fn,
                            "could not start worker thread %d of %d (%s); create the context "
                            "with fewer threads (num_threads, or GRAPHC_NUM_THREADS)",
                            started + 1, n - 1, strerror(err));
        }
        c->workers = threads;
        c->worker_args = args;
    }
    graphc_pool_unlock(c->pool);
    c->threads[0] = (int64_t)(intptr_t)graphc_parallel_for;
    c->threads[1] = (int64_t)(intptr_t)c->pool;
    return GRT_OK;
}

static void stop_pool(struct grt_ctx *c) {
    if (!c->pool) return;
    /* No region runs (calls hold the context), so the pool is free to take. */
    while (!graphc_pool_try_lock(c->pool)) sched_yield();
    if (c->workers) {
        graphc_pool_shutdown(c->pool);
        pthread_t *threads = c->workers;
        for (int i = 0; i < c->num_threads - 1; i++) pthread_join(threads[i], NULL);
    }
    free(c->workers);
    free(c->worker_args);
    free(c->pool);
}
#else
/* A serial build: a parallel kernel's whole range, on the caller's thread. */
static void serial_parallel_for(void *pool, void (*thunk)(void *, int64_t, int64_t), void *ctx,
                                int64_t extent) {
    (void)pool;
    thunk(ctx, 0, extent);
}

static int start_pool(const struct grt_model *m, struct grt_ctx *c, int n, const char *fn) {
    (void)m, (void)n, (void)fn;
    c->threads[0] = (int64_t)(intptr_t)serial_parallel_for;
    c->threads[1] = 0;
    return GRT_OK;
}

static void stop_pool(struct grt_ctx *c) { (void)c; }
#endif

/* ---- contexts ------------------------------------------------------------------------------ */

static void *aligned_zeros(int64_t bytes) {
    size_t n = ((size_t)(bytes > 0 ? bytes : 1) + 63) / 64 * 64;
    void *p = aligned_alloc(64, n);
    if (p) memset(p, 0, n);
    return p;
}

static void free_ctx(struct grt_ctx *c) {
    free(c->io);
    free(c->arena);
    free(c->state);
    free(c->scalars);
    free(c->present);
    free(c->lr_last);
    free(c);
}

int grt_create(const struct grt_model *m, struct grt_ctx **out, int num_threads,
               const char *fn) {
    if (!out)
        return grt_fail(NULL, GRT_ERR_ARGUMENT, fn,
                        "ctx is NULL: pass the address of a %s_ctx pointer to fill in",
                        m->name);
    *out = NULL;
    int rc = check_cpu(m, fn), n = 1;
    if (rc) return rc;
    if ((rc = thread_count(m, num_threads, &n, fn))) return rc;
    struct grt_ctx *c = calloc(1, sizeof *c);
    if (!c) return grt_fail(NULL, GRT_ERR_MEMORY, fn, "no memory for a context");
    c->m = m;
    c->io = calloc((size_t)m->n_inputs + 1, sizeof *c->io);
    c->arena = aligned_zeros(m->arena_bytes);
    c->state = aligned_zeros(m->state_bytes);
    c->scalars = calloc((size_t)m->n_slots + 1, sizeof *c->scalars);
    c->present = calloc((size_t)m->n_entries + 1, 1);
    c->lr_last = calloc((size_t)m->n_groups + 1, sizeof *c->lr_last);
    if (!c->io || !c->arena || !c->state || !c->scalars || !c->present || !c->lr_last) {
        free_ctx(c);
        return grt_fail(NULL, GRT_ERR_MEMORY, fn,
                        "no memory for a context (%lld bytes of working memory, %lld of state)",
                        (long long)m->arena_bytes, (long long)m->state_bytes);
    }
    for (int i = 0; i < m->n_tensors; i++) {
        const struct grt_tensor *t = &m->tensors[i];
        if (t->image >= 0) memcpy(c->state + t->offset, m->image + t->image, (size_t)t->nbytes);
    }
    memcpy(c->present, m->present, (size_t)m->n_entries);
    memcpy(c->lr_last, m->lr_initial, (size_t)m->n_groups * sizeof *c->lr_last);
    for (int i = 0; i < m->n_inputs; i++) {
        const struct grt_input *in = &m->inputs[i];
        if (in->kind == GRT_IN_STATE) c->io[i] = c->state + m->tensors[in->index].offset;
        if (in->kind == GRT_IN_SCALAR) c->io[i] = &c->scalars[in->index];
    }
    c->num_threads = n;
    if ((rc = start_pool(m, c, n, fn))) {
        free_ctx(c);
        return rc;
    }
    strcpy(c->status, "ok");
    *out = c;
    return GRT_OK;
}

int grt_destroy(struct grt_ctx *c, const char *fn) {
    if (!c) return GRT_OK;
    int rc = grt_enter(c, fn);
    if (rc) return rc;
    stop_pool(c);
    free_ctx(c);
    return GRT_OK;
}

/* ---- running ------------------------------------------------------------------------------- */

static void store_scalar(struct grt_ctx *c, const struct grt_scalar *s, double v, int64_t iv) {
    if (s->slot < 0) return;
    void *slot = &c->scalars[s->slot];
    if (s->dtype == GRT_F32) {
        float f = (float)v;
        memcpy(slot, &f, sizeof f);
    } else if (s->dtype == GRT_F64) {
        memcpy(slot, &v, sizeof v);
    } else {
        memcpy(slot, &iv, sizeof iv);
    }
}

/* The optimizers' and random draws' per-call values, as their Python functions compute
 * them (graphc/host_scalars.py): double arithmetic, one rounding to the scalar's type.
 * Python's learning rates are doubles: when lr is the exported one (rounded to float), the
 * groups' exported doubles are used, so the numbers match Python's bit for bit even where
 * the lr enters double arithmetic (Adam); another lr scales them, as a schedule would. */
static void compute_scalars(const struct grt_model *m, struct grt_ctx *c, float lr) {
    int exported = m->n_groups > 0 && (float)m->lr_initial[0] == lr;
    for (int i = 0; i < m->n_scalars; i++) {
        const struct grt_scalar *s = &m->scalars[i];
        double lr_g = 0.0, v = 0.0;
        if (s->group >= 0)
            lr_g = exported ? m->lr_initial[s->group] : (double)lr * m->lr_ratio[s->group];
        int64_t iv = 0;
        unsigned char *t = s->tensor >= 0 ? c->state + m->tensors[s->tensor].offset : NULL;
        float step;
        int64_t rng[2];
        switch (s->op) {
        case GRT_OP_LR:
            v = c->lr_last[s->group] = lr_g;
            break;
        case GRT_OP_SGD_KEEP:
            v = c->present[s->entry] ? s->a : 0.0;
            break;
        case GRT_OP_SGD_MIX:
            v = c->present[s->entry] ? s->a : 1.0;
            c->present[s->entry] = 1;
            break;
        case GRT_OP_ADAM_DECAY:
            v = 1.0 - lr_g * s->a;
            break;
        case GRT_OP_ADAM_STEP:
            memcpy(&step, t, sizeof step);
            step += 1.0f;
            memcpy(t, &step, sizeof step);
            v = lr_g / (1.0 - pow(s->a, (double)step));
            c->present[s->entry] = 1;
            break;
        case GRT_OP_ADAM_BC2:
            memcpy(&step, t, sizeof step);
            v = sqrt(1.0 - pow(s->a, (double)step));
            break;
        case GRT_OP_RNG_SEED:
            memcpy(rng, t, sizeof rng);
            iv = rng[0];
            break;
        case GRT_OP_RNG_OFFSET:
            memcpy(rng, t, sizeof rng);
            iv = rng[1];
            rng[1] += s->n;
            memcpy(t, rng, sizeof rng);
            break;
        }
        store_scalar(c, s, v, iv);
    }
}

static int check_arguments(const struct grt_model *m, struct grt_ctx *c, const char *fn,
                           const void *const *args) {
    for (int i = 0; i < m->n_arguments; i++) {
        const struct grt_argument *a = &m->arguments[i];
        if (!args[i])
            return grt_fail(c, GRT_ERR_ARGUMENT, fn, "%s is NULL: pass %s", a->name, a->what);
        if (!a->is_label) continue;
        const int64_t *v = args[i];
        for (int64_t j = 0; j < a->count; j++) {
            if ((v[j] >= 0 && v[j] < a->classes) || (a->has_ignore && v[j] == a->ignore))
                continue;
            return grt_fail(c, GRT_ERR_DATA, fn,
                            "%s[%lld] is %lld, outside 0..%lld: the model has %lld classes",
                            a->name, (long long)j, (long long)v[j], (long long)a->classes - 1,
                            (long long)a->classes);
        }
    }
    return GRT_OK;
}

static unsigned char *location(const struct grt_ctx *c, struct grt_location at) {
    return at.in_arena ? c->arena + at.where : (unsigned char *)c->io[at.where];
}

int grt_run(const struct grt_model *m, struct grt_ctx *c, const char *fn,
            const void *const *args, float lr, void *result) {
    int rc = grt_begin(m, c, fn);
    if (rc) return rc;
    if (!m->training && !result) {
        rc = grt_fail(c, GRT_ERR_ARGUMENT, fn, "outputs is NULL: pass room for %lld bytes",
                      (long long)m->result_bytes);
    } else if (m->uses_lr && !(isfinite(lr) && lr >= 0.0f)) {
        rc = grt_fail(c, GRT_ERR_ARGUMENT, fn,
                      "lr is %g: the learning rate must be a finite number >= 0", (double)lr);
    } else {
        rc = check_arguments(m, c, fn, args);
    }
    if (rc) {
        grt_leave(c);
        return rc;
    }
#if defined(__x86_64__)
    /* The caller's floating-point mode may flush denormals (code built with -ffast-math
     * does): compute in the standard one, as graphc does, and give the caller's back. */
    unsigned int mxcsr = _mm_getcsr();
    _mm_setcsr(MXCSR_DEFAULT);
#endif
    compute_scalars(m, c, lr);
    for (int i = 0; i < m->n_inputs; i++)
        if (m->inputs[i].kind == GRT_IN_ARGUMENT) c->io[i] = (void *)args[m->inputs[i].index];
    int status = m->entry(c->io, c->arena, c->threads);
#if defined(__x86_64__)
    _mm_setcsr(mxcsr);
#endif
    if (status) {
        int k = status - 1;
        const char *why = k < m->n_kernels ? m->kernel_errors[k] : NULL;
        rc = grt_fail(c, GRT_ERR_DATA, fn, "kernel %d rejected the batch: %s", k,
                      why ? why : "it found values it cannot compute with");
    } else {
        for (int i = 0; i < m->n_writebacks; i++) {
            const struct grt_writeback *w = &m->writebacks[i];
            const struct grt_tensor *t = &m->tensors[w->tensor];
            unsigned char *from = location(c, w->from), *to = c->state + t->offset;
            if (from != to) memmove(to, from, (size_t)t->nbytes);
        }
        if (result) memcpy(result, location(c, m->result), (size_t)m->result_bytes);
    }
    for (int i = 0; i < m->n_inputs; i++) /* never keep the caller's pointers */
        if (m->inputs[i].kind == GRT_IN_ARGUMENT) c->io[i] = NULL;
    grt_leave(c);
    return rc;
}
