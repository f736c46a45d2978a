"""Start-up guards (issue 24 item 5): what a one-tile run imports, checked in fresh processes.

Import costs are measured in ``benchmarks/startup.py`` (recorded in
``benchmarks/results/``); these tests assert on ``sys.modules``, never on time.
timm (which pulls in torchvision and ``torch._dynamo``: seconds) is needed only
to build a ConvNeXt encoder, so ``import hvx`` and an ONNX Runtime engine on a
cached export must not import it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

_IMPORT = r"""
import json, sys
import hvx
print(json.dumps(sorted(m for m in ("timm", "torchvision", "torch._dynamo", "torch")
                        if m in sys.modules)))
"""

_ORT = r"""
import json, sys
import hvx
for backend in sys.argv[2:]:  # "auto" on the CPU picks ONNX Runtime first when it imports
    eng = hvx.Engine.load(backend=backend, precision="fp32", cache_dir=sys.argv[1])
    assert eng.backend == "onnxruntime", eng.backend
print(json.dumps(sorted(m for m in ("timm", "torchvision", "torch._dynamo") if m in sys.modules)))
"""


def _run(code: str, *args: str, cache) -> list[str]:
    env = dict(os.environ, HVX_CACHE_DIR=str(cache), OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_hvx_imports_no_torch_nor_timm(tmp_path):
    assert _run(_IMPORT, cache=tmp_path) == []


@pytest.mark.slow
def test_onnxruntime_engine_on_a_cached_export_imports_no_timm(tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs onnxruntime")
    cache = tmp_path / "cache"
    first = _run(_ORT, str(cache), "onnxruntime", cache=cache)  # exports: builds the model
    assert "timm" in first
    assert list((cache / "onnx").glob("*.onnx")), "expected the export in the cache"
    assert _run(_ORT, str(cache), "onnxruntime", "auto", cache=cache) == []
