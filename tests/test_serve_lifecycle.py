"""`r1forge serve` around a stand-in for vLLM (a Python child that never answers /health).

The real vLLM is served in `test_serving_e2e.py` and `test_images.py`; these check the
wrapper's own start-up and stop handling, where a race showed up under `podman stop`.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from .conftest import child_env

SERVE = """
import sys
from pathlib import Path
from r1forge.serving import server

fake_vllm = [sys.executable, "-c", sys.argv[2]]
server.ServerOptions.command = lambda self, cpu: fake_vllm
sys.exit(server.serve(server.ServerOptions(model=Path(sys.argv[1]), port=9), ready_timeout_s=60))
"""


def start_serve(tmp_path: Path, fake_vllm: str) -> subprocess.Popen[str]:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    return subprocess.Popen(
        [sys.executable, "-c", SERVE, str(model), fake_vllm],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_stop_during_start_up_is_a_clean_exit(tmp_path: Path) -> None:
    """SIGTERM before vLLM's health was seen stops it and exits 0, not 'vLLM exited'."""
    up = tmp_path / "vllm-up"
    fake_vllm = (
        "import signal, sys, time, pathlib\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        f"pathlib.Path({str(up)!r}).touch()\n"
        "time.sleep(60)\n"
    )
    serve = start_serve(tmp_path, fake_vllm)
    deadline = time.monotonic() + 60
    while not up.exists():
        assert serve.poll() is None and time.monotonic() < deadline, serve.communicate()
        time.sleep(0.1)
    serve.send_signal(signal.SIGTERM)
    out, err = serve.communicate(timeout=60)
    assert serve.returncode == 0, err
    assert "vLLM stopped" in out and "serving" not in out


def test_vllm_dying_during_start_up_is_an_error(tmp_path: Path) -> None:
    serve = start_serve(tmp_path, "import sys; sys.exit(3)")
    _, err = serve.communicate(timeout=60)
    assert serve.returncode != 0
    assert "vLLM exited with status 3" in err
