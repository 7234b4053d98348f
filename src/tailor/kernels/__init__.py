"""tailor's CPU speed paths: the C++ kernels by operation, and `patched`, which applies and undoes them.

    build.py        builds and loads the one extension (matmul.cpp, argmax.cpp, norm.cpp, rotary.cpp,
                    widen.cpp, bf16.h) once, into a cache folder named by the sources' digest; supported(),
                    available() (the bf16 kernels: AVX512-BF16), avx512_available() (the fp32 ones: AVX-512F)
    matmul.py       Product: decoding's bf16 products with F.linear's rounding, weights packed once; fp32
                    rows on bf16 weights (widen.cpp) where the CPU's bf16 is emulated
    argmax.py       greedy decoding's argmax on bf16 or fp32 logits
    norm.py         RMSNorm: decoding's bf16 norm bit for bit (fp32 rows on a bf16 weight: the fp32 norm),
                    training's fp32 norm forward and backward
    rotary.py       training's rotary embedding (decoding's pass, rotary.cpp's rotary_bf16, is called by the decoder)
    head.py         the LM head's resident bf16 weight and fp32 gradient under autocast
    embedding.py    a tied embedding's sparse gradient
    mlp.py          gated MLPs (Llama, Qwen, Mistral, Gemma) that keep gate and up only for the backward
    attention.py    grouped-query attention for teacher-forced forwards (training and scoring)
    linear.py       projections under autocast that keep one bf16 input copy and no weight cast; their
                    weights' gradients bf16 for an optimizer that reads them (`end_pass` between passes)
    forwards.py     replaced_forwards: the norms' and MLPs' forward swapped within a block, restored after it
    paths.py        patched(model, training=...): every path that applies, on for a block, undone after it

Training (train/) and decoding (generate/) import these from here, never from each other. The bf16
kernels run where the CPU has AVX512-BF16 and they built, the fp32 ones (widen.cpp's product, rotary_f32,
argmax_f32, the fp32 norm) where it has AVX-512F; everywhere else, or with `train.kernels` / `decode.kernels` false, torch's own ops run.
"""

from tailor.kernels.argmax import argmax
from tailor.kernels.build import available, supported, avx512_available
from tailor.kernels.linear import end_pass
from tailor.kernels.matmul import Product
from tailor.kernels.norm import rms_norm
from tailor.kernels.paths import patched

__all__ = ["Product", "argmax", "available", "end_pass", "patched", "rms_norm", "supported", "avx512_available"]
