"""The Triton kernels build for a GPU target with the argument types torch.compile gives them.

Under ``torch.compile`` (Inductor) a Python float argument of a user Triton kernel
is typed float64; a kernel that feeds it to ``libdevice.mul_rn`` beside a float32
then fails to build (seen on an H200, 2026-11-28). Building the Triton IR for
an sm_90 target needs no GPU, so this runs on the CPU, in a subprocess without
``TRITON_INTERPRET`` (the interpreter never builds IR).
"""

import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

SCRIPT = r"""
import triton
from triton._C.libtriton import ir
from triton.backends.compiler import GPUTarget
from triton.compiler.compiler import make_backend
from hvx.preprocess import _triton as K

FLOATS = {"LUT_SCALE", "INV_TW", "INV_TH"}
CONST = {"_clahe_lut_kernel": {"TPP": 1, "PIX": 256, "RN": True},
         "_clahe_apply_kernel": {"BLOCK": 1024, "SIX": True, "RN": True}}
target = GPUTarget("cuda", 90, 32)
backend = make_backend(target)
options = backend.parse_options({})
for name, const in CONST.items():
    fn = getattr(K, name)
    for float_type in ("fp32", "fp64"):
        sig = {a: ("constexpr" if a in const else "*u8" if a.endswith("_ptr")
                   else float_type if a in FLOATS else "i32") for a in fn.arg_names}
        ctx = ir.context()
        ir.load_dialects(ctx)
        backend.load_dialects(ctx)
        src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=const)
        src.make_ir(target, options, backend.get_codegen_implementation(options),
                    backend.get_module_map(), ctx)
        print(name, float_type, "ok")
"""


def test_kernels_build_with_float32_and_float64_scalars():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    p = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count(" ok") == 4, p.stdout
