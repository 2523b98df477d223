"""benchmarks/cpu_limit.py --quick runs end to end: hardware first, the matmul peak at the model's shapes, every
extraction and training row, the goals, and a JSON of finite numbers. No timing is asserted."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "cpu_limit.py"
EXTRACTION = ["ours fp32", "ours fp32 aten", "ours bf16", "ours int8", "HF fp32", "HF bf16-weights", "HF autocast",
              "fair-esm fp32", "fair-esm bf16-weights"]
TRAINING = ["ours fp32", "ours bf16 fairseq", "ours autocast", "HF fp32", "HF bf16-weights", "HF autocast",
            "fair-esm fp32", "fair-esm bf16-weights"]
#: rows that must run (fair-esm with bf16 weights may fail: its ESM-1b token dropout promotes to float32)
MUST_RUN = {"extract": ["ours fp32", "ours bf16", "ours int8", "HF fp32", "HF autocast", "fair-esm fp32"],
            "train": ["ours fp32", "ours bf16 fairseq", "ours autocast", "HF fp32", "HF autocast", "fair-esm fp32"]}


def numbers(value: Any) -> Iterator[float]:
    """Every int / float inside a JSON value."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield float(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from numbers(item)


def section(text: str, heading: str) -> list[str]:
    """The non-blank lines of the section starting with ``heading`` up to the next ``==`` heading."""
    lines = [line for line in text.split(heading, 1)[1].splitlines()[1:] if line.strip()]
    return lines[: next((i for i, line in enumerate(lines) if line.startswith("==")), len(lines))]


def test_quick_run_prints_every_section_and_row(tmp_path: Path) -> None:
    out = tmp_path / "cpu_limit.json"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json", str(out)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    text = run.stdout
    assert text.startswith("== hardware ==\ncpu: ")
    for needle in ("speed-relevant CPU flags:", "bfloat16 hardware:", "torch threads 1", "load average", "torch 2."):
        assert needle in text.split("\n\n", 1)[0], needle
    peak = section(text, "== matmul peak, width 80")
    assert [line.split()[0] for line in peak[1:]] == ["q/k/v/out", "fc1", "fc2", "peak"]  # peak (best kernel)
    for heading, names in (("== extraction", EXTRACTION), ("== training step", TRAINING)):
        rows = section(text, heading)
        assert "1 layer(s) (ESM-1b has 33" in text.split(heading, 1)[1].splitlines()[0]
        for name in names:
            assert any(line.startswith(f"{name} ") for line in rows), f"{heading}: no row {name!r}"
    goals = section(text, "== goals")
    assert any("extraction ours fp32 / fp32 peak" in line for line in goals)
    assert any("training step ours bf16 fairseq / bf16 peak" in line for line in goals)
    assert any("/ HF best" in line for line in goals)

    report = json.loads(out.read_text())
    assert all(math.isfinite(x) for x in numbers(report))
    (width,) = report["widths"]
    assert set(width["peaks"]) == {"fp32", "bf16", "int8"} and all(v > 0 for v in width["peaks"].values())
    assert len(width["peak_shapes"]) == 3 * 5  # 3 shapes x (fp32, bf16) x (aten, onednn) + int8
    for name, must in MUST_RUN.items():
        rows = width["sections"][name]["rows"]
        assert list(rows) == (EXTRACTION if name == "extract" else TRAINING)
        for row in must:
            assert rows[row]["error"] is None, (name, row, rows[row]["error"])
            assert rows[row]["gflops"] > 0 and rows[row]["frac_peak"] > 0
        assert rows["ours fp32"]["ratios"]["ours fp32"] == 1.0
    assert set(report["goals"]) == {"80"}
