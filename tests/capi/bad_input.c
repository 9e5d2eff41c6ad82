/* Test program: bad input through the C API of an exported "convnet" step. Every case
 * prints "name|code|message"; the program must never crash.
 * usage: bad_input WRONG_MODEL TRUNCATED DAMAGED OTHER_SHAPES NOT_WEIGHTS DIR SAVED */
#include <math.h>
#include <stdio.h>

#include "convnet.h"

static float x[CONVNET_INPUTS_SIZE];
static int64_t y[CONVNET_LABELS_SIZE];

static void report(const char *name, int code, const convnet_ctx *ctx) {
    printf("%s|%d|%s\n", name, code, convnet_status(ctx));
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc != 8) return 2;
    float loss;
    convnet_ctx *ctx = NULL;
    report("create_null", convnet_create(NULL, 0), NULL);
    report("create_threads", convnet_create(&ctx, -3), NULL);
    report("step_null_ctx", convnet_step(NULL, x, y, CONVNET_LR, &loss), NULL);
    report("load_null_ctx", convnet_load_weights(NULL, argv[1]), NULL);
    report("save_null_ctx", convnet_save_weights(NULL, argv[7]), NULL);
    if (convnet_create(&ctx, 0) != CONVNET_OK) {
        report("create", 1, NULL);
        return 1;
    }
    report("step_null_inputs", convnet_step(ctx, NULL, y, CONVNET_LR, &loss), ctx);
    report("step_null_labels", convnet_step(ctx, x, NULL, CONVNET_LR, &loss), ctx);
    y[3] = CONVNET_CLASSES;
    report("step_label_high", convnet_step(ctx, x, y, CONVNET_LR, &loss), ctx);
    y[3] = -1;
    report("step_label_negative", convnet_step(ctx, x, y, CONVNET_LR, &loss), ctx);
    y[3] = 0;
    report("step_lr_nan", convnet_step(ctx, x, y, NAN, &loss), ctx);
    report("step_lr_negative", convnet_step(ctx, x, y, -1.0f, &loss), ctx);
    report("load_null_path", convnet_load_weights(ctx, NULL), ctx);
    report("load_missing", convnet_load_weights(ctx, "/nonexistent/w.safetensors"), ctx);
    report("load_directory", convnet_load_weights(ctx, argv[6]), ctx);
    report("load_wrong_model", convnet_load_weights(ctx, argv[1]), ctx);
    report("load_truncated", convnet_load_weights(ctx, argv[2]), ctx);
    report("load_damaged", convnet_load_weights(ctx, argv[3]), ctx);
    report("load_other_shapes", convnet_load_weights(ctx, argv[4]), ctx);
    report("load_not_weights", convnet_load_weights(ctx, argv[5]), ctx);
    report("save_null_path", convnet_save_weights(ctx, NULL), ctx);
    report("save_no_directory", convnet_save_weights(ctx, "/nonexistent/dir/w.safetensors"), ctx);
    /* after every failure above, the weights are still the exported ones */
    report("save", convnet_save_weights(ctx, argv[7]), ctx);
    report("step_no_loss", convnet_step(ctx, x, y, CONVNET_LR, NULL), ctx);
    report("load_saved", convnet_load_weights(ctx, argv[7]), ctx);
    report("destroy", convnet_destroy(ctx), NULL);
    report("destroy_null", convnet_destroy(NULL), NULL);
    return 0;
}
