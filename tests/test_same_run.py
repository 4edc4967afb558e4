"""benchmarks/same_run.py: two run folders are the same run when every tensor and every record but the times agree."""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import same_run  # noqa: E402


def _run(folder: Path, weight: float, seconds: float):
    (folder / "model").mkdir(parents=True)
    save_file({"w": torch.full((2, 2), weight)}, str(folder / "model" / "model.safetensors"))
    (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "dev": {"score": 0.5}, "seconds": seconds}) + "\n")


def test_equal_runs_differing_only_in_time_are_the_same_and_a_changed_tensor_is_named(tmp_path, capsys):
    _run(tmp_path / "a", 1.0, 10.0)
    _run(tmp_path / "b", 1.0, 99.0)
    _run(tmp_path / "c", 1.0 + 1e-7, 10.0)
    assert same_run.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "the same run" in capsys.readouterr().out
    assert same_run.main([str(tmp_path / "a"), str(tmp_path / "c")]) == 1
    assert "model/model.safetensors: w differs" in capsys.readouterr().out
