/* Test program: a training library and an inference library of the same model in one
 * program. Trains STEPS steps with "convnet", moves the weights to "classifier" through a
 * file, and prints its logits of the last batch as hex floats.
 * usage: two_libraries DATA STEPS WEIGHTS */
#include <stdio.h>
#include <stdlib.h>

#include "classifier.h"
#include "convnet.h"

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    int steps = atoi(argv[2]);
    size_t nx = (size_t)steps * CONVNET_INPUTS_SIZE, ny = (size_t)steps * CONVNET_LABELS_SIZE;
    float *x = malloc(nx * sizeof *x), out[CLASSIFIER_OUTPUTS_SIZE];
    int64_t *y = malloc(ny * sizeof *y);
    FILE *f = fopen(argv[1], "rb");
    if (!x || !y || !f || fread(x, sizeof *x, nx, f) != nx || fread(y, sizeof *y, ny, f) != ny)
        return 2;
    fclose(f);
    convnet_ctx *train;
    classifier_ctx *infer;
    if (convnet_create(&train, 2) || classifier_create(&infer, 1)) return 1;
    for (int s = 0; s < steps; s++)
        if (convnet_step(train, x + (size_t)s * CONVNET_INPUTS_SIZE,
                         y + (size_t)s * CONVNET_LABELS_SIZE, CONVNET_LR, NULL))
            return 1;
    if (convnet_save_weights(train, argv[3]) || classifier_load_weights(infer, argv[3]) ||
        classifier_forward(infer, x + (size_t)(steps - 1) * CONVNET_INPUTS_SIZE, out)) {
        fprintf(stderr, "%s / %s\n", convnet_status(train), classifier_status(infer));
        return 1;
    }
    for (int i = 0; i < CLASSIFIER_OUTPUTS_SIZE; i++) printf("%a\n", out[i]);
    free(x);
    free(y);
    return convnet_destroy(train) || classifier_destroy(infer);
}
