"""Numpy integer reference: the definition of the right int8 answer, op by op."""

from microfit.reference.ops import (
    add_params,
    add_s8,
    avg_pool2d_s8,
    conv2d_s8,
    depthwise_conv2d_s8,
    fully_connected_s8,
    max_pool2d_s8,
    output_size,
    same_padding,
    softmax_params,
    softmax_s8,
)

__all__ = [
    "add_params",
    "add_s8",
    "avg_pool2d_s8",
    "conv2d_s8",
    "depthwise_conv2d_s8",
    "fully_connected_s8",
    "max_pool2d_s8",
    "output_size",
    "same_padding",
    "softmax_params",
    "softmax_s8",
]
