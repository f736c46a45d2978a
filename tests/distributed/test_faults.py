"""Fault tolerance: a node of a two-node loopback cluster killed mid-run.

The run ends with the single-process outputs, byte for byte (so no nucleus twice).
Every Ray process a test starts is ended by PID (psutil descendants), and every
wait is bounded.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_same_outputs, descendants, kill_pids, run_cohort

ray = pytest.importorskip("ray", reason="hvx.distributed needs Ray: pip install 'hvx[ray]'")
pytest.importorskip("psutil", reason="the tests end Ray processes by PID through psutil")

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
RAY = str(Path(sys.executable).with_name("ray"))
#: Fast node-death detection for the loopback cluster (GCS health checks).
FAST_HEALTH = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_AUTH_MODE": "disabled",  # a loopback test cluster; no token to share
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, **FAST_HEALTH, "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.Popen(
        [RAY, "start", "--block", "--disable-usage-stats", "--node-ip-address", "127.0.0.1", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _kill_tree(proc: subprocess.Popen) -> None:
    kill_pids([*descendants(proc.pid), proc.pid])
    proc.wait(timeout=30)


def _wait(cond, seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    pytest.fail(f"expected {what} within {seconds} s")


@pytest.fixture
def two_nodes(monkeypatch):
    """A head (2 CPUs) and a second node (1 CPU) on loopback, one ``hvx_engine`` slot each;
    the second also carries its own ``node2`` resource."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    port = _free_port()
    head = _start(
        [
            "--head",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            '--resources={"hvx_engine": 1}',
        ]
    )
    node2 = None
    try:
        _wait(lambda: _port_open(port), 90, "the Ray head to listen")
        node2 = _start(
            [
                f"--address=127.0.0.1:{port}",
                "--num-cpus=1",
                '--resources={"hvx_engine": 1, "node2": 1}',
            ]
        )
        ray.init(address=f"127.0.0.1:{port}", log_to_driver=False)
        _wait(lambda: sum(n["Alive"] for n in ray.nodes()) == 2, 90, "two live Ray nodes")
        yield {"head": head, "node2": node2}
    finally:
        ray.shutdown()
        for p in (node2, head):
            if p is not None:
                _kill_tree(p)
        current = Path("/tmp/ray/ray_current_cluster")  # what `ray stop` would remove
        if current.is_file() and current.read_text().strip().endswith(f":{port}"):
            current.unlink(missing_ok=True)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_node_killed_mid_run(cohort, two_nodes, tmp_path):
    """One engine actor per node; node 2 dies after the first committed region.
    Its in-flight chunks go to the head's actor; outputs equal the single-process run."""
    import threading

    out = tmp_path / "ray"
    killed = threading.Event()

    def killer():
        end = time.monotonic() + 240
        while time.monotonic() < end and not list(out.glob("*/regions/r*.npz")):
            time.sleep(0.02)
        _kill_tree(two_nodes["node2"])
        killed.set()

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    res = run_cohort(
        cohort["slides"], out, 240, workers=2, actor_options={"resources": {"hvx_engine": 1}}
    )
    th.join(30)
    assert killed.is_set()
    assert res["timing"]["retried_chunks"] > 0  # node 2 held chunks in flight when it died
    _wait(lambda: sum(n["Alive"] for n in ray.nodes()) == 1, 60, "node 2 marked dead")
    assert_same_outputs(cohort, out)
