/* Runs a model compiled by `shufflekit compile --target T -o model.o`.
 *
 *   shufflekit compile specs/shufflenet_v1.yaml --set resolution=64 \
 *       --target aarch64-unknown-linux-gnu -o model.o
 *   aarch64-linux-gnu-gcc -O2 -static -I. examples/c/main.c model.o -o classify
 *   qemu-aarch64 ./classify --input image.npy
 *
 * With the AVX-512 (or AVX2+FMA: x86-64-v3) kernels, link the kernel
 * library written beside the object too:
 *
 *   shufflekit compile specs/shufflenet_v1.yaml --target x86_64-unknown-linux-gnu \
 *       --cpu x86-64-v4 -o model.o
 *   gcc -O2 -I. examples/c/main.c model.o model.kernels.a -o classify -lm
 *
 * Usage: classify [--input FILE] [--seed S] [--batch N] [--top K]
 *                 [--output FILE] [--weights FILE]
 *   --input   float32 input: .npy ('<f4', C order, [N, ...] or one image)
 *             or raw little-endian float32 (a whole number of images);
 *             without it, a standard normal input drawn from --seed
 *   --output  write the raw float32 outputs ([N, OUTPUT_SIZE]) there
 *   --weights the packed weights of an object built with
 *             --external-weights (required for such objects)
 * The model header is included as "model.h" (use -I to point at it).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "model.h"

static void die(const char *msg, const char *arg) {
    fprintf(stderr, "error: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    exit(1);
}

/* Reads a whole file. */
static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open", path);
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            if (!buf) die("out of memory", NULL);
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        if (got == 0) break;
        n += got;
    }
    fclose(f);
    *len = n;
    return buf;
}

/* The float32 data of an .npy file, or the file itself if it is raw. */
static float *read_input(const char *path, size_t *floats) {
    size_t len;
    unsigned char *buf = read_file(path, &len);
    size_t offset = 0;
    if (len >= 10 && memcmp(buf, "\x93NUMPY", 6) == 0) {
        size_t hlen;
        if (buf[6] == 1) {
            hlen = buf[8] | (buf[9] << 8);
            offset = 10 + hlen;
        } else {
            if (len < 12) die("truncated .npy header", path);
            hlen = buf[8] | (buf[9] << 8) | ((size_t)buf[10] << 16) | ((size_t)buf[11] << 24);
            offset = 12 + hlen;
        }
        if (offset > len) die("truncated .npy header", path);
        char *header = malloc(offset + 1);
        memcpy(header, buf, offset);
        header[offset] = 0;
        const char *dict = header + (buf[6] == 1 ? 10 : 12);
        if (!strstr(dict, "'<f4'")) die("the .npy array is not little-endian float32", path);
        if (strstr(dict, "'fortran_order': True")) die("the .npy array is in Fortran order", path);
        free(header);
    }
    if ((len - offset) % 4 != 0) die("the input is not a whole number of float32 values", path);
    *floats = (len - offset) / 4;
    float *data = malloc(*floats * 4 + 1);
    memcpy(data, buf + offset, *floats * 4);
    free(buf);
    return data;
}

/* splitmix64 and Box-Muller: a standard normal input from a seed. */
static uint64_t rng_state;
static double uniform(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return ((z >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
static float normal(void) {
    return (float)(sqrt(-2.0 * log(uniform())) * cos(6.283185307179586 * uniform()));
}

int main(int argc, char **argv) {
    const char *input_path = NULL, *output_path = NULL, *weights_path = NULL;
    unsigned long long seed = 0;
    size_t batch = 1, top = 5;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) die("missing value or unknown option", a);
        if (!strcmp(a, "--input")) input_path = argv[++i];
        else if (!strcmp(a, "--output")) output_path = argv[++i];
        else if (!strcmp(a, "--weights")) weights_path = argv[++i];
        else if (!strcmp(a, "--seed")) seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--batch")) batch = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--top")) top = strtoull(argv[++i], NULL, 10);
        else die("unknown option", a);
    }
    const size_t in_size = SHUFFLEKIT_MODEL_INPUT_SIZE, out_size = SHUFFLEKIT_MODEL_OUTPUT_SIZE;
    float *input;
    if (input_path) {
        size_t n;
        input = read_input(input_path, &n);
        if (n == 0 || n % in_size != 0) die("the input size is not a multiple of one image", input_path);
        batch = n / in_size;
    } else {
        if (batch == 0) die("--batch must be at least 1", NULL);
        rng_state = seed;
        input = malloc(batch * in_size * sizeof(float));
        for (size_t i = 0; i < batch * in_size; i++) input[i] = normal();
    }
    float *output = malloc(batch * out_size * sizeof(float));
    /* 64-byte aligned arena, as the header asks (16 or more). */
    size_t arena_bytes = batch * (size_t)SHUFFLEKIT_MODEL_ARENA_BYTES;
    void *arena = aligned_alloc(64, (arena_bytes + 63) / 64 * 64);
    if (!input || !output || !arena) die("out of memory", NULL);

    if (weights_path) {
        size_t len;
        unsigned char *w = read_file(weights_path, &len);
        if (len != SHUFFLEKIT_MODEL_WEIGHTS_BYTES) die("the weights file has the wrong size", weights_path);
        void *aligned = aligned_alloc(64, (len + 63) / 64 * 64 + 64);
        memcpy(aligned, w, len);
        SHUFFLEKIT_MODEL_RUN_WITH_WEIGHTS(input, output, arena, batch, aligned);
        free(aligned);
        free(w);
    } else {
#if SHUFFLEKIT_MODEL_EMBEDDED_WEIGHTS
        SHUFFLEKIT_MODEL_RUN(input, output, arena, batch);
#else
        die("this model was compiled without embedded weights: pass --weights FILE", NULL);
#endif
    }

    printf("%s (%s): %zu image(s), %zu outputs each\n", SHUFFLEKIT_MODEL_NAME,
           SHUFFLEKIT_MODEL_VERSION, batch, out_size);
    if (top > out_size) top = out_size;
    for (size_t b = 0; b < batch; b++) {
        const float *o = output + b * out_size;
        unsigned char *taken = calloc(out_size, 1);
        printf("image %zu:", b);
        for (size_t k = 0; k < top; k++) {
            size_t best = out_size;
            for (size_t c = 0; c < out_size; c++)
                if (!taken[c] && (best == out_size || o[c] > o[best])) best = c;
            taken[best] = 1;
            printf(" %zu (%.4f)", best, o[best]);
        }
        printf("\n");
        free(taken);
    }
    if (output_path) {
        FILE *f = fopen(output_path, "wb");
        if (!f || fwrite(output, sizeof(float), batch * out_size, f) != batch * out_size || fclose(f))
            die("cannot write", output_path);
    }
    free(input);
    free(output);
    free(arena);
    return 0;
}
