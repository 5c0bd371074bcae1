"""r1forge: the DeepSeek-R1 recipe as a platform (SFT, GRPO, rejection sampling, distillation, serving)."""

import os
import platform

__version__ = "0.1.0"

# The same numbers on every x86 machine (issue 16). torch's CPU kernels pick their instruction
# set per processor at the first call: measured on the tiny recipe, an AVX512 machine and one
# limited to AVX2 trained different weights from the same seed, while thread counts and MKL's
# and oneDNN's own choices changed nothing. Every process that imports r1forge before torch
# runs its first kernel therefore uses AVX2 kernels (all x86 machines of the kind have them;
# about 10% slower on the tiny base than AVX512); MKL's conditional numerical reproducibility
# and oneDNN are pinned to the same level for hosts where they would choose AVX512 (Intel).
# On Intel hosts MKL's GEMM also split its sums by thread count (measured 2026-12-06: the ci
# base differed between 1 and 2 threads), so its reproducibility mode is STRICT as well.
# A value already in the environment wins: `ATEN_CPU_CAPABILITY=avx512` trades that for speed.
CPU_KERNEL_PINS = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2,STRICT",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
if platform.machine().lower() in ("x86_64", "amd64"):
    for _key, _value in CPU_KERNEL_PINS.items():
        os.environ.setdefault(_key, _value)
