"""The model registry's whole download path against a loopback HTTP server the test runs."""

from __future__ import annotations

import http.server
import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "model"))
from hovernet_helpers import official_state, write_tiatoolbox_pth

from hvx import registry
from hvx.cli import main

PANNUKE = ["neoplastic", "inflammatory", "connective", "dead", "non-neoplastic epithelial"]


class _Server:
    """Serves files from a folder on 127.0.0.1; counts requests; can cut a body short."""

    def __init__(self, root: Path) -> None:
        self.root, self.hits, self.truncate = root, [], False
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits.append(self.path)
                path = outer.root / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if outer.truncate else data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/models"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    (root / "models").mkdir()
    state = dict(official_state("fast", 6))
    # foreground everywhere and types 1..5 favoured, so the random network yields nuclei
    # (its hv head splits the foreground)
    state["decoder.np.u0.conv.bias"] = torch.tensor([-20.0, 20.0])
    state["decoder.tp.u0.conv.bias"] = torch.tensor([-20.0, 20.0, 19.0, 18.0, 17.0, 16.0])
    write_tiatoolbox_pth(root / "models" / "hovernet_fast-pannuke.pth", state)
    server = _Server(root)
    yield server
    server.close()


@pytest.fixture
def env(served, tmp_path, monkeypatch):
    monkeypatch.setenv("HVX_MODEL_BASE_URL", served.url)
    monkeypatch.setenv("HVX_CACHE_DIR", str(tmp_path / "cache"))
    served.hits.clear()
    served.truncate = False
    return tmp_path / "cache"


def test_registry_entries_are_complete():
    assert set(registry.REGISTRY) == {
        "hovernet-pannuke",
        "hovernet-monusac",
        "hovernet-consep",
        "hovernet-kumar",
        "hovernet-cpm17",
    }
    for e in registry.REGISTRY.values():
        assert e.mode in ("fast", "original") and e.licence and "Graham" in e.citation
        assert e.sha256 == "" or len(e.sha256) == 64  # unverified ones stay empty
        assert e.url.startswith("https://") or (e.url == "" and e.page)
    assert "non-commercial" in registry.REGISTRY["hovernet-pannuke"].licence
    assert "non-commercial" in registry.REGISTRY["hovernet-monusac"].licence
    assert list(registry.REGISTRY["hovernet-pannuke"].class_names) == PANNUKE


@pytest.mark.slow
def test_download_convert_then_infer_by_name(env, served, tmp_path, caplog):
    """hvx infer --model hovernet-pannuke: one download, a bundle, PanNuke names in the outputs."""
    import cv2

    # dark blobs on a light background: with the np head biased to foreground, the random
    # network's hv head splits them into nuclei (17 with these weights)
    yy, xx = np.mgrid[:120, :140]
    dark = (np.sin(yy / 6.0) * np.sin(xx / 6.0)) > 0.5
    cv2.imwrite(str(tmp_path / "tile.png"), np.repeat((255 - 120 * dark)[..., None], 3, 2))
    caplog.set_level("INFO")
    rc = main(
        [
            "infer",
            str(tmp_path / "tile.png"),
            "--model",
            "hovernet-pannuke",
            "--out",
            str(tmp_path / "out"),
            "--format",
            "geojson,csv",
            "--backend",
            "torch",
        ]
    )
    assert rc == 0
    assert served.hits == ["/models/hovernet_fast-pannuke.pth"]
    assert any(
        "SHA-256" in r.getMessage() and "no verified checksum" in r.getMessage()
        for r in caplog.records
    )  # no invented checksum: the computed one is printed
    bundle = env / "models" / "hovernet-pannuke"
    meta = json.loads((bundle / "model.json").read_text())
    assert meta["class_names"] == PANNUKE and meta["mpp"] == 0.25
    assert "non-commercial" in meta["provenance"]["licence"]
    assert not (env / "downloads" / "hovernet_fast-pannuke.pth").exists()  # converted, removed
    geo = json.loads((tmp_path / "out" / "tile.geojson").read_text())
    names = {f["properties"]["classification"]["name"] for f in geo["features"]}
    assert names and names <= set(PANNUKE)
    header = (tmp_path / "out" / "tile.csv").read_text().splitlines()[1:]
    assert all(any(n in row for n in PANNUKE) for row in header)
    # cached: listed as such, and a second load does not download again
    assert registry.fetch("hovernet-pannuke") == bundle
    assert served.hits == ["/models/hovernet_fast-pannuke.pth"]
    rows = {r["name"]: r for r in registry.list_models()}
    assert rows["hovernet-pannuke"]["cached"] and not rows["hovernet-kumar"]["cached"]


def test_checksum_mismatch_leaves_nothing(env, served, monkeypatch):
    entry = registry.REGISTRY["hovernet-pannuke"]
    import dataclasses

    bad = dataclasses.replace(entry, sha256="0" * 64)
    monkeypatch.setitem(registry.REGISTRY, "hovernet-pannuke", bad)
    with pytest.raises(ValueError, match="differs from the registry's 0000"):
        registry.fetch("hovernet-pannuke", progress=False)
    assert not any((env / "downloads").iterdir())
    assert registry.cached_bundle("hovernet-pannuke") is None


def test_truncated_download_is_not_kept(env, served):
    served.truncate = True
    with pytest.raises(ConnectionError, match=r"cannot download .* offline"):
        registry.fetch("hovernet-pannuke", progress=False)
    assert not any((env / "downloads").iterdir())


def test_offline_refuses_with_a_clear_message(env, monkeypatch):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    monkeypatch.setenv("HVX_MODEL_BASE_URL", f"http://127.0.0.1:{port}/x")
    with pytest.raises(ConnectionError, match="offline\\? download it elsewhere and put it at"):
        registry.fetch("hovernet-monusac", progress=False, timeout=5)
    monkeypatch.delenv("HVX_MODEL_BASE_URL")  # (a mirror may host it; the registry cannot)
    with pytest.raises(ConnectionError, match="no direct download; get hovernet_original_cpm17"):
        registry.fetch("hovernet-cpm17", progress=False)


def test_unknown_name_and_hvx_models(env, capsys):
    with pytest.raises(ValueError, match="expected a model name from"):
        registry.fetch("hovernet-nope")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "hovernet-pannuke" in out and "non-commercial" in out and "no " in out
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == set(registry.REGISTRY)
