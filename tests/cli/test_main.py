import json
import subprocess
import sys

import pytest

from hvx.cli import main


def test_info_prints_every_capability(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in ("torch", "cuda", "triton", "tensorrt", "onnxruntime", "numba", "native"):
        assert name in out


def test_info_json_is_machine_readable(capsys):
    assert main(["info", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["features"]["native"]["available"] is True


def test_unknown_command_exits_2():
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2


@pytest.mark.parametrize("script", ["hvx", "hvx-train", "hvx-bench"])
def test_console_scripts_print_help(script):
    module = {"hvx": "hvx.cli", "hvx-train": "hvx.training.cli", "hvx-bench": "hvx.bench"}[script]
    code = f"import sys; from {module} import main; sys.exit(main(['--help']))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"usage: {script}" in out.stdout
