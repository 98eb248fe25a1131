"""``scripts/manifold_tables.py`` on the committed demo report (docs/figures/manifold-demo/manifold.md)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("manifold_tables", ROOT / "scripts" / "manifold_tables.py")
assert spec is not None and spec.loader is not None
manifold_tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(manifold_tables)


def _run(tmp_path: Path, dataset: str) -> Path:
    run = tmp_path / dataset
    (run / "manifold").mkdir(parents=True)
    shutil.copy(ROOT / "docs" / "figures" / "manifold-demo" / "manifold.md", run / "manifold" / "manifold.md")
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"dataset": dataset}}))
    return run


def test_tables_read_the_reports_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert manifold_tables.main([str(_run(tmp_path, "sentiment"))]) == 0
    out = capsys.readouterr().out
    assert "| vector | split | sentiment | 1.0000 | 1.0000 | 0.5598 | 0.9944 | 0.9893 | 0.9669 | — |" in out
    assert "| vector | split | sentiment | Utility | quadratic (3) | 0.9975 / 0.9693 | 0.9944 / 0.9669 |" in out
    layer15 = "| 15 | -0.29 | -0.29 | -0.29 | -0.8514 | 0.0177 / 0.9923 | 0.4171 (0.05382) |"
    assert layer15 in out


def test_the_paper_value_is_set_beside_the_same_form_and_method(tmp_path: Path) -> None:
    report = manifold_tables.read_report(_run(tmp_path, "psychopathy"), "manifold.md")
    report["objective"] = "sft"
    line = manifold_tables.r2_table([report])[-1]
    assert line.endswith("| 0.93 / 0.99 |")  # Table 2, Gemma-2-9B-IT, vector SFT, Psychopathy


def test_a_run_without_a_report_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert manifold_tables.main([str(tmp_path)]) == 2
    assert f"{tmp_path / 'manifold' / 'manifold.md'} not found" in capsys.readouterr().err
