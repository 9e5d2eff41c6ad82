/* The runtime of a library written by `graphc export`: what the generated model.c (its
 * tables and public NAME_* functions) and the fixed runtime (runtime.c, weights.c) share.
 *
 * A model is described entirely by data (struct grt_model); the runtime code is the same
 * for every model, so it is compiled once per compiler and cached. Nothing here is
 * exported from the library: the NAME_* wrappers in model.c are its only public symbols.
 */
#ifndef GRAPHC_RUNTIME_H
#define GRAPHC_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#define GRT_HIDDEN __attribute__((visibility("hidden")))
#define GRT_STATUS_BYTES 1024
#define GRT_MAX_DIMS 8

/* Error codes: the generated header names them NAME_OK, NAME_ERR_ARGUMENT, ... */
enum grt_code {
    GRT_OK = 0,
    GRT_ERR_ARGUMENT = 1, /* a NULL pointer or a value out of range */
    GRT_ERR_CPU = 2,      /* this CPU lacks instructions the library was built for */
    GRT_ERR_MEMORY = 3,   /* an allocation failed */
    GRT_ERR_THREADS = 4,  /* a worker thread could not be started */
    GRT_ERR_IO = 5,       /* a file could not be opened, read or written */
    GRT_ERR_FORMAT = 6,   /* not a weights file, or a truncated or damaged one */
    GRT_ERR_MODEL = 7,    /* the weights of another model: a tensor missing or shaped otherwise */
    GRT_ERR_DATA = 8,     /* bad values in a batch (a label outside the classes) */
    GRT_ERR_BUSY = 9      /* another thread is inside a call on the same context */
};

/* Element types of the host-computed scalars (the state's tensors only need their bytes). */
enum grt_dtype { GRT_F32 = 0, GRT_F64 = 1, GRT_I64 = 2 };

/* A tensor the context keeps from call to call: a parameter, a buffer, optimizer state, the
 * random-number state, or a constant the step reads. */
struct grt_tensor {
    const char *name;   /* its name in weights files; NULL for a constant (never saved) */
    const char *alias;  /* another name accepted when loading ("model/conv1.weight"), or NULL */
    const char *dtype;  /* its safetensors dtype: "F32", "I64", ... */
    int ndim;
    const int64_t *shape;
    int64_t offset;     /* in the state block */
    int64_t nbytes;
    int64_t image;      /* offset of its initial value in the embedded image; -1: zeros */
    int entry;          /* the optimizer entry it belongs to, or -1 */
    int required;       /* loading: 1 if a weights file must have it (the model's tensors) */
    const char *header; /* its saved header entry, up to the data offsets' numbers */
};

/* One parameter's optimizer state (state_dict()["state"][i]): saved and loaded as a whole,
 * and absent (zeros, the optimizer's first step to come) until the first step. */
struct grt_entry {
    const char *fragment; /* its part of a saved file's structure record (JSON, escaped) */
    int first, count;     /* its tensors: tensors[first .. first + count) */
};

enum grt_input_kind { GRT_IN_ARGUMENT = 0, GRT_IN_STATE = 1, GRT_IN_SCALAR = 2 };

struct grt_input {
    int kind;  /* enum grt_input_kind */
    int index; /* the argument, the tensor, or the scalar slot */
};

/* Where a graph output lives after a call: in the arena, or in one of the inputs' memory. */
struct grt_location {
    int in_arena;
    int64_t where; /* arena byte offset, or graph input index */
};

/* An updated state tensor that the memory plan did not write in place. */
struct grt_writeback {
    struct grt_location from;
    int tensor;
};

/* An argument of NAME_step / NAME_forward. Labels are checked against their classes first. */
struct grt_argument {
    const char *name;
    const char *what; /* what to pass, for messages: "196608 floats (NAME_INPUTS_SIZE)" */
    int64_t count;    /* elements */
    int is_label;
    int64_t classes;    /* labels: valid values are 0 .. classes - 1 */
    int has_ignore;     /* labels: and this one, which the loss ignores */
    int64_t ignore;
};

/* How the host-computed scalars of a step are computed (graphc/host_scalars.py). */
enum grt_op {
    GRT_OP_LR = 0,        /* lr of the group */
    GRT_OP_SGD_KEEP = 1,  /* entry present ? a (momentum) : 0 */
    GRT_OP_SGD_MIX = 2,   /* entry present ? a (1 - dampening) : 1; then the entry is present */
    GRT_OP_ADAM_DECAY = 3,/* 1 - lr * a (weight decay) */
    GRT_OP_ADAM_STEP = 4, /* step += 1; lr / (1 - pow(a (beta1), step)); entry present */
    GRT_OP_ADAM_BC2 = 5,  /* sqrt(1 - pow(a (beta2), step)) */
    GRT_OP_RNG_SEED = 6,  /* rng[0] */
    GRT_OP_RNG_OFFSET = 7 /* rng[1]; then rng[1] += n */
};

struct grt_scalar {
    int op;
    int slot;   /* in the scalars block, or -1: computed for its side effects only */
    int dtype;  /* enum grt_dtype */
    int group;  /* the optimizer's parameter group (its lr) */
    int entry;  /* the optimizer entry whose presence it reads or sets, or -1 */
    int tensor; /* Adam: the entry's float32 step; RNG: the int64[2] (seed, offset) */
    double a;
    int64_t n;
};

/* A saved file's structure record (graphc.load reads it) is text, the optimizer's present
 * entries, and each group's current learning rate. */
enum grt_piece_kind { GRT_PIECE_TEXT = 0, GRT_PIECE_STATE = 1, GRT_PIECE_LR = 2 };

struct grt_piece {
    int kind;
    const char *text;
    int group;
};

/* A CPU feature the code needs: a cpuid bit, or (reg 4) a mask of state XCR0 must enable. */
struct grt_feature {
    const char *name;
    uint32_t leaf, subleaf;
    int reg; /* 0..3: eax, ebx, ecx, edx; 4: XCR0 */
    uint32_t bit;
};

struct grt_model {
    const char *name;      /* NAME */
    const char *target;    /* the instruction set, for messages */
    const char *retarget;  /* what to do on a CPU without it */
    int training;          /* 1: NAME_step; 0: NAME_forward */
    int (*entry)(void **io, void *arena, const int64_t *threads);
    int64_t arena_bytes, state_bytes;
    int n_inputs;
    const struct grt_input *inputs;
    int n_arguments;
    const struct grt_argument *arguments;
    struct grt_location result; /* the loss, or the forward's output */
    int64_t result_bytes;
    int n_writebacks;
    const struct grt_writeback *writebacks;
    int n_tensors;
    const struct grt_tensor *tensors;
    const int *file_order; /* the saved tensors, in the order a saved file holds them */
    int n_saved;
    int n_entries;
    const struct grt_entry *entries;
    const unsigned char *present; /* each entry's presence at export */
    int n_scalars, n_slots;
    const struct grt_scalar *scalars;
    int uses_lr;
    int n_groups;
    const double *lr_ratio;   /* group lr = lr * ratio (the first group's is 1) */
    const double *lr_initial; /* each group's lr at export, saved until the first step */
    int n_pieces;
    const struct grt_piece *pieces;
    const char *state_empty, *state_open, *state_close;
    int n_features;
    const struct grt_feature *features;
    int n_kernels;
    const char *const *kernel_errors; /* per kernel: what its failure means, or NULL */
    const unsigned char *image;
    int default_threads;
    int64_t pool_bytes;
    int job_slot;
};

struct grt_ctx; /* the context: NAME_ctx to users */

GRT_HIDDEN int grt_create(const struct grt_model *m, struct grt_ctx **out, int num_threads,
                          const char *fn);
GRT_HIDDEN int grt_destroy(struct grt_ctx *c, const char *fn);
GRT_HIDDEN int grt_run(const struct grt_model *m, struct grt_ctx *c, const char *fn,
                       const void *const *args, float lr, void *result);
GRT_HIDDEN int grt_load_weights(const struct grt_model *m, struct grt_ctx *c, const char *fn,
                                const char *path);
GRT_HIDDEN int grt_save_weights(const struct grt_model *m, struct grt_ctx *c, const char *fn,
                                const char *path);
GRT_HIDDEN const char *grt_status(const struct grt_ctx *c);
GRT_HIDDEN int grt_num_threads(const struct grt_ctx *c);

/* Shared by runtime.c and weights.c. */
struct grt_ctx {
    const struct grt_model *m;
    int busy; /* atomically exchanged: one call at a time */
    char status[GRT_STATUS_BYTES];
    void **io;
    unsigned char *arena, *state;
    uint64_t *scalars;
    unsigned char *present;
    double *lr_last;
    int64_t threads[2]; /* parallel_for, pool: what the entry calls parallel kernels through */
    int num_threads;
    void *pool;
    void *workers; /* pthread_t[num_threads - 1] */
    void *worker_args;
};

GRT_HIDDEN int grt_fail(struct grt_ctx *c, int code, const char *fn, const char *format, ...)
    __attribute__((format(printf, 4, 5)));
GRT_HIDDEN int grt_enter(struct grt_ctx *c, const char *fn);
/* A call's start: ctx not NULL, made by this library, and taken (grt_enter). */
GRT_HIDDEN int grt_begin(const struct grt_model *m, struct grt_ctx *c, const char *fn);
GRT_HIDDEN void grt_leave(struct grt_ctx *c);

#endif
