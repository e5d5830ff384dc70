/*
 * microfit C runtime: the one header generated code includes.
 *
 * Every kernel is plain C99: no allocation, no float, no library calls
 * beyond what mf_platform.h needs on AVR. A kernel takes a small params
 * struct of plain data (initialise it with designated initialisers) and raw
 * pointers. Model constants (params, weights, bias, multipliers, shifts) are
 * declared with MF_CONST, see mf_platform.h. Requantization rounding follows
 * TFLite Micro / CMSIS-NN unless MF_SINGLE_ROUNDING is defined (LiteRT), see
 * mf_fixedpoint.h. The numpy twins in microfit.reference.ops define the
 * expected bytes; tests hold the two identical.
 */
#ifndef MF_RUNTIME_H
#define MF_RUNTIME_H

#include "mf_platform.h"
#include "mf_fixedpoint.h"
#include "mf_conv2d_s8.h"
#include "mf_depthwise_conv2d_s8.h"
#include "mf_fully_connected_s8.h"
#include "mf_pool2d_s8.h"
#include "mf_add_s8.h"
#include "mf_softmax_s8.h"
#include "mf_lut_s8.h"
#include "mf_pad_s8.h"
#include "mf_concatenation_s8.h"

#endif /* MF_RUNTIME_H */
