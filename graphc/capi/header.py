"""NAME.h: the C interface of an exported library, documented for the people calling it."""

from __future__ import annotations

import numpy as np

import graphc
from graphc.capi import layout as L

CODES = [
    ("OK", 0, "success"),
    ("ERR_ARGUMENT", 1, "a NULL pointer or a value out of range (the message says which)"),
    ("ERR_CPU", 2, "this CPU lacks instructions the library was built for (--target)"),
    ("ERR_MEMORY", 3, "an allocation failed"),
    ("ERR_THREADS", 4, "a worker thread could not be started"),
    ("ERR_IO", 5, "a file could not be opened, read or written"),
    ("ERR_FORMAT", 6, "not a weights file, or a truncated or damaged one"),
    ("ERR_MODEL", 7, "the weights of another model: a tensor missing or shaped otherwise"),
    ("ERR_DATA", 8, "bad values in the batch (a label outside the classes)"),
    ("ERR_BUSY", 9, "another thread is inside a call on this context"),
]


def header_source(layout: L.Layout, description: str, threads: int | None) -> str:
    n, N = layout.name, layout.name.upper()
    train = layout.kind == L.TRAIN
    args = {a.name: a for a in layout.arguments}
    x = args["inputs"].node
    out = layout.result_node
    lines = [
        f"/* {n}.h: the C interface of lib{n}.so, written by graphc export (graphc "
        f"{graphc.__version__}).",
        " *",
        f" * {description}",
        " * One call runs it natively over the library's own memory: no Python and no compiler",
        " * at run time; the library needs only libc and libm"
        + (" (and pthreads)." if threads != 1 else "."),
        " *",
        f" *     {n}_ctx *ctx;",
        f" *     if ({n}_create(&ctx, 0) != {N}_OK) {{",
        f' *         fprintf(stderr, "%s\\n", {n}_status(NULL));',
        " *         return 1;",
        " *     }",
    ]
    if train:
        lines += [
            " *     float loss;",
            f" *     if ({n}_step(ctx, inputs, labels, {N}_LR, &loss) != {N}_OK)",
            f' *         fprintf(stderr, "%s\\n", {n}_status(ctx));',
            f' *     {n}_save_weights(ctx, "{n}.safetensors");',
        ]
    else:
        lines += [
            f' *     {n}_load_weights(ctx, "{n}.safetensors");  (or keep the exported weights)',
            f" *     if ({n}_forward(ctx, inputs, outputs) != {N}_OK)",
            f' *         fprintf(stderr, "%s\\n", {n}_status(ctx));',
        ]
    lines += [
        f" *     {n}_destroy(ctx);",
        " *",
        f" * Build: cc app.c -I DIR -L DIR -l{n} -Wl,-rpath,DIR   (DIR: where lib{n}.so is)",
        " *",
        " * Every function returns an error code and never aborts; the message is",
        f" * {n}_status(ctx) (or {n}_status(NULL) when there was no context: a failed create,",
        " * a NULL ctx, or a call refused because another thread was inside one). A context",
        " * is used by one thread at a time; contexts are independent of each other.",
        " * Numbers: the same, bit for bit, as graphc.compile's on a machine of the same",
        " * instruction set, for any number of threads.",
        " */",
        f"#ifndef {N}_H",
        f"#define {N}_H",
        "",
        "#include <stdint.h>",
        "",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        "",
        f"/* A context: the weights{' and optimizer state' if train else ''}, working memory",
        " * and worker threads of one instance of the model. */",
        f"typedef struct {n}_ctx {n}_ctx;",
        "",
        "enum {",
    ]
    lines += [f"    {N}_{code} = {value}, /* {what} */" for code, value, what in CODES]
    lines += ["};", ""]
    lines.append(f"#define {N}_BATCH_SIZE {x.shape[0] if x.shape else 1}")
    lines.append(f"/* inputs: float32 {list(x.shape)}, row-major (NCHW) */")
    lines.append(f"#define {N}_INPUTS_SIZE {args['inputs'].count}")
    if train:
        lab = args["labels"]
        lines.append(f"/* labels: int64 {list(lab.node.shape)}, class indices */")
        lines.append(f"#define {N}_LABELS_SIZE {lab.count}")
        if lab.classes is not None:
            lines.append(f"#define {N}_CLASSES {lab.classes}")
        if layout.lr_initial:
            lr = str(np.float32(layout.lr_initial[0]))  # shortest text of the float
            lines.append("/* the exported learning rate: with it, the numbers are graphc's */")
            lines.append(f"#define {N}_LR {lr}f")
    else:
        lines.append(f"/* outputs: float32 {list(out.shape)} */")
        lines.append(f"#define {N}_OUTPUTS_SIZE {L.Argument('', out).count}")
    threads_text = (
        " * A serial build: num_threads is ignored and everything runs on the caller's thread."
        if threads == 1
        else " * num_threads: 1..512, or 0 for $GRAPHC_NUM_THREADS, else "
        + (f"{threads}." if threads else "the cores this process may use.")
    )
    lines += [
        "",
        "/* Creates a context with the weights the library was exported with. It checks that",
        " * this CPU has the instructions the library was built for (" + N + "_ERR_CPU if not).",
        threads_text,
        " * On failure *ctx is NULL and " + n + "_status(NULL) says why. */",
        f"int {n}_create({n}_ctx **ctx, int num_threads);",
        "",
    ]
    if train:
        lines += [
            "/* One training step on a batch: forward, loss, backward, the optimizer's update of",
            " * every parameter (and the model's buffers). lr: the learning rate of this step",
            " * (other parameter groups keep their ratio to the first one's). loss: where the",
            " * batch's loss goes, or NULL. Labels outside the classes are refused",
            f" * ({N}_ERR_DATA) before anything changes. */",
            f"int {n}_step({n}_ctx *ctx, const float *inputs, const int64_t *labels, float lr,",
            " " * len(f"int {n}_step(") + "float *loss);",
            "",
        ]
    else:
        lines += [
            f"/* The model's forward on a batch, into outputs ({N}_OUTPUTS_SIZE floats). */",
            f"int {n}_forward({n}_ctx *ctx, const float *inputs, float *outputs);",
            "",
        ]
    lines += [
        "/* Replaces the weights with those of a safetensors file: one this library saved, a",
        " * graphc.save of the model's state_dict, a `graphc train` checkpoint, or a PyTorch",
        " * state_dict saved with safetensors. Every tensor is checked before anything changes.",
    ]
    if train:
        lines += [
            " * The optimizer's state of a parameter is loaded when the file has it (a file this",
            " * library or graphc train saved), else it starts afresh as a new optimizer's. */",
        ]
    else:
        lines[-1] += " */"
    lines += [
        f"int {n}_load_weights({n}_ctx *ctx, const char *path);",
        "",
        "/* Writes the weights to a safetensors file under their state_dict names",
        " * (graphc.load reads it"
        + (
            ' as {"model": state_dict, "optimizer": optimizer state_dict}'
            if train
            else " as the state_dict"
        )
        + "), atomically:",
        " * a temporary file next to path, renamed over it once complete. */",
        f"int {n}_save_weights({n}_ctx *ctx, const char *path);",
        "",
        '/* What the last call on ctx did ("ok" or why it failed); for ctx NULL, the last',
        " * failure of this thread that had no context. Valid until the next call. */",
        f"const char *{n}_status(const {n}_ctx *ctx);",
        "",
        "/* The threads a step runs on, the caller's included (0 for NULL). */",
        f"int {n}_num_threads(const {n}_ctx *ctx);",
        "",
        "/* Stops the worker threads and frees the context (NULL: nothing to do). Destroy",
        " * every context before unloading the library (dlclose): its threads run its code. */",
        f"int {n}_destroy({n}_ctx *ctx);",
        "",
        "#ifdef __cplusplus",
        "}",
        "#endif",
        "",
        f"#endif /* {N}_H */",
        "",
    ]
    return "\n".join(lines)
