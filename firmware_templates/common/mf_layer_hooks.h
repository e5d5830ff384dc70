/*
 * Per-layer timing hooks for the generated model.
 *
 * model.c brackets each layer's kernel call with MODEL_LAYER_BEGIN(i) and
 * MODEL_LAYER_END(i), which it defines as nothing unless they are already
 * defined. The firmware build force-includes this header (gcc -include
 * mf_layer_hooks.h) so they record the tick counter around every layer; the
 * host reads the figures with READ_LAYERS (docs/protocol.md). A model
 * compiled without this header simply reports no layers.
 *
 * Define MF_LAYER_PROFILE to 0 to compile the hooks out (and save
 * 4 bytes of RAM per layer on the smallest boards).
 */
#ifndef MF_LAYER_HOOKS_H
#define MF_LAYER_HOOKS_H

#include <stdint.h>

#ifndef MF_LAYER_PROFILE
#define MF_LAYER_PROFILE 1
#endif

#if MF_LAYER_PROFILE
void mf_layer_begin(uint16_t layer);
void mf_layer_end(uint16_t layer);
#define MODEL_LAYER_BEGIN(i) mf_layer_begin((uint16_t)(i))
#define MODEL_LAYER_END(i) mf_layer_end((uint16_t)(i))
#endif

#endif /* MF_LAYER_HOOKS_H */
