"""The ablation grid's phase cache: each seed's phases trained once, reused across learning rates, arms and
grids (a frozen-encoder grid beside a full one), and never read for another phase setting."""
import json
from pathlib import Path

import pytest

from tasks import ablate
from tasks.studies.phase_cache import phase_key

from test_ablate import _tiny_grid


def test_the_key_follows_the_phase_settings_and_not_the_finetuning():
    cell = ablate.cell_config(ablate.parse_args(["--model", "m", "--seeds", "1", "2", "3"]), "3phase", 1,
                              Path("x"), 1e-4)
    key = phase_key(cell, ("dae",), "m")
    assert key.startswith("dae-seed1-")
    same = {"lr": 5e-4, "head_lr": 1.0, "epochs": 9, "finetune_encoder": "frozen", "out_dir": "y", "adv_epsilon": 3.0,
            "child_tuning_p": 0.9}
    assert phase_key(cell.with_flags(**same), ("dae",), "m") == key
    for change in ({"dae_epochs": 12}, {"phase_lr": 3e-5}, {"seed": 2}, {"max_examples": 7}, {"heldout_fraction": 0.3},
                   {"contrastive_augmentation": 12}):
        assert phase_key(cell.with_flags(**change), ("dae",), "m") != key, change
    assert phase_key(cell, ("dae", "contrastive"), "m") != key and phase_key(cell, ("dae",), "other") != key


@pytest.mark.filterwarnings("ignore:.*no checkpoint at")
def test_phases_train_once_per_seed_and_a_frozen_grid_reuses_them(tiny_checkpoint, tiny_data, tmp_path):
    cache = tmp_path / "phases"
    common = ["--techniques", "plain", "dae", "3phase", "--select_on", "heldout", "--heldout_fraction", "0.25",
              "--contrastive_augmentation", "1", "--phase_cache", str(cache)]
    ablate.main(_tiny_grid(tiny_checkpoint, tiny_data, tmp_path / "full", 1, 16, *common))
    entries = sorted(p.name.rsplit("-", 1)[0] for p in cache.iterdir())
    # per seed: DAE once, contrastive-after-DAE once, whatever the arm (and the lr: test_the_key_follows_...)
    assert entries == sorted(f"{phases}-seed{s}" for s in (1, 2, 3) for phases in ("dae", "dae-contrastive"))
    trained = {p.name: json.loads((p / "phase.json").read_text()) for p in cache.iterdir()}
    for name, record in trained.items():
        assert (cache / name / "encoder" / "config.json").is_file()
        assert isinstance(record["seconds"], float) and record["seconds"] >= 0  # a tiny phase may take ~0 s
        assert not [f for f in (cache / name).rglob("*.safetensors") if f.parent.name != "encoder"]
        if name.startswith("dae-contrastive"):  # starts from the DAE entry of its seed
            seed = name.split("-")[2]
            assert record["from"] == str(next(cache.glob(f"dae-{seed}-*")) / "encoder")
    records = [json.loads(x) for x in (tmp_path / "full" / "results.jsonl").read_text().splitlines()]
    for r in records:
        if r["technique"] == "plain":
            assert r["phase_seconds"] == 0.0
            continue
        dae = next(v for k, v in trained.items() if k.startswith(f"dae-seed{r['seed']}-"))
        both = next(v for k, v in trained.items() if k.startswith(f"dae-contrastive-seed{r['seed']}-"))
        expected = dae["seconds"] + (both["seconds"] if r["technique"] == "3phase" else 0.0)
        assert r["phase_seconds"] == pytest.approx(expected, abs=0.06) and r["wall_seconds"] >= r["phase_seconds"]
        config = json.loads((tmp_path / "full" / f"{r['technique']}-seed{r['seed']}" / "run_config.json").read_text()) \
            if r["stage"] == "main" else None
        if config:  # the cell fine-tuned from the cached encoder, with no phase of its own
            assert config["model"].startswith(str(cache)) and config["phases"] == ["finetune"]

    stamps = {p: p.stat().st_mtime_ns for p in cache.rglob("phase.json")}
    frozen_grid = [a for a in common if a not in ("plain", "dae")] + ["--finetune_encoder", "frozen"]  # 3phase only
    ablate.main(_tiny_grid(tiny_checkpoint, tiny_data, tmp_path / "frozen", 1, 16, *frozen_grid))
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("phase.json")} == stamps  # nothing trained again
    frozen = [json.loads(x) for x in (tmp_path / "frozen" / "results.jsonl").read_text().splitlines()]
    assert len(frozen) == 3 and all(r["score"] > 0 for r in frozen)
    # (another phase setting is another entry: test_the_key_follows_the_phase_settings_and_not_the_finetuning)
