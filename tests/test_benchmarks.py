"""The benchmark scripts still run end to end (tiny CPU sizes; no timing is asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT


@pytest.mark.slow
def test_sft_throughput_smoke(tmp_path: Path) -> None:
    out = tmp_path / "sft.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/sft_throughput.py"), "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    for side in ("trl", "r1forge"):
        steps = report[side]["step_tokens_per_s"]
        assert report[side]["tokens_per_s"] > 0 and steps and all(x > 0 for x in steps)
    assert report["ratio_vs_trl"] == pytest.approx(
        report["r1forge"]["tokens_per_s"] / report["trl"]["tokens_per_s"]
    )
    assert "ratio r1forge / TRL" in proc.stdout
