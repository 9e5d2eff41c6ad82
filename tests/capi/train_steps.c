/* Test program: N training steps through the C API of an exported "convnet" step.
 * usage: train_steps DATA STEPS WEIGHTS_OUT THREADS
 * DATA: STEPS batches of inputs (float32), then STEPS batches of labels (int64).
 * Prints each step's loss as a C99 hex float (exact), then the threads used. */
#include <stdio.h>
#include <stdlib.h>

#include "convnet.h"

int main(int argc, char **argv) {
    if (argc != 5) return 2;
    int steps = atoi(argv[2]);
    size_t nx = (size_t)steps * CONVNET_INPUTS_SIZE, ny = (size_t)steps * CONVNET_LABELS_SIZE;
    float *x = malloc(nx * sizeof *x);
    int64_t *y = malloc(ny * sizeof *y);
    FILE *f = fopen(argv[1], "rb");
    if (!x || !y || !f || fread(x, sizeof *x, nx, f) != nx || fread(y, sizeof *y, ny, f) != ny) {
        fprintf(stderr, "cannot read %s\n", argv[1]);
        return 2;
    }
    fclose(f);
    convnet_ctx *ctx;
    if (convnet_create(&ctx, atoi(argv[4])) != CONVNET_OK) {
        fprintf(stderr, "%s\n", convnet_status(NULL));
        return 1;
    }
    for (int s = 0; s < steps; s++) {
        float loss;
        if (convnet_step(ctx, x + (size_t)s * CONVNET_INPUTS_SIZE,
                         y + (size_t)s * CONVNET_LABELS_SIZE, CONVNET_LR, &loss) != CONVNET_OK) {
            fprintf(stderr, "%s\n", convnet_status(ctx));
            return 1;
        }
        printf("%a\n", loss);
    }
    printf("threads %d\n", convnet_num_threads(ctx));
    if (convnet_save_weights(ctx, argv[3]) != CONVNET_OK) {
        fprintf(stderr, "%s\n", convnet_status(ctx));
        return 1;
    }
    free(x);
    free(y);
    return convnet_destroy(ctx);
}
