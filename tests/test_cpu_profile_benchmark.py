"""Smoke test of benchmarks/cpu_profile.py: tiny model, every workload and dtype, shares add up (no timings)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
cpu_profile = pytest.importorskip("cpu_profile")


def test_quick_profile_categories_and_shares(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--quick profiles extract (fp32, bf16) and train (fp32, bf16); each table has every category, sums to 100%."""
    out = tmp_path / "profile.json"
    results = cpu_profile.main(["--quick", "--threads", "1", "--dtypes", "fp32,bf16", "--json", str(out)])
    assert [(r["workload"], r["dtype"]) for r in results] == [
        ("extract", "fp32"), ("extract", "bf16"), ("train", "fp32"), ("train", "bf16")]
    for result in results:
        categories = result["categories"]
        assert set(categories) == set(cpu_profile.CATEGORIES)
        assert sum(row["share"] for row in categories.values()) == pytest.approx(100.0, abs=0.01)
        assert sum(row["ms"] for row in categories.values()) == pytest.approx(result["total_ms"], rel=1e-6)
        assert categories["matmul"]["ms"] > 0 and categories["layernorm"]["ms"] > 0
        assert categories["attention"]["ms"] > 0
        assert 0 < len(result["top_ops"]) <= 8
    extract_fp32, extract_bf16, train_fp32, train_bf16 = results
    assert extract_fp32["categories"]["optimizer"]["ms"] == 0
    assert train_fp32["categories"]["optimizer"]["ms"] > 0 and train_bf16["categories"]["optimizer"]["ms"] > 0
    assert extract_bf16["categories"]["casts"]["ms"] > 0  # autocast casts the fp32 activations
    assert json.loads(out.read_text())["results"][0]["workload"] == "extract"
    printed = capsys.readouterr().out
    assert "torch threads 1" in printed and "load average" in printed
    assert "fp32 master Adam" in printed and "top ops" in printed
