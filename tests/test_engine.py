"""The engine's boundaries and contracts: what it imports, the callback hooks and roles, the accelerator on one
process, and a technique plugged in through the registry alone (docs/techniques.md's worked example)."""
import ast
import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from tasks import techniques
from tasks.engine import Accelerator, Callback, TrainConfig, Trainer, callbacks as callbacks_module, flag
from tasks.techniques.base import Technique

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("minibert", "optim", "tasks", "gan", "benchmarks")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set:
    """The project modules a file imports (module level or inside functions), outside `if TYPE_CHECKING:`."""
    tree, module = ast.parse(path.read_text(encoding="utf-8")), _module(path)
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = module.split(".")[:None if path.name == "__init__.py" else -1]
            target = (".".join(base[:len(base) - node.level + 1] + [node.module or ""]).strip(".") if node.level
                      else node.module)
            found |= {target} | {f"{target}.{a.name}" for a in node.names}
    return {name for name in found if name.split(".")[0] in PACKAGES}


def _graph() -> dict:
    files = {_module(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {m: {t for t in _imports(p) if t in files and t != m} for m, p in files.items()}


def test_the_engine_imports_nothing_from_the_domain_the_techniques_or_the_clis():
    for path in sorted((ROOT / "tasks" / "engine").glob("*.py")):
        above = {m for m in _imports(path) if not m.startswith(("tasks.engine", "minibert", "optim"))}
        assert not above, f"{path.name} imports {sorted(above)}"


def test_minibert_and_optim_import_nothing_above_them():
    for pkg in ("minibert", "optim"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            above = {m for m in _imports(path) if not m.startswith(("minibert", "optim"))}
            assert not above, f"{path.relative_to(ROOT)} imports {sorted(above)}"


# tasks/ by role, lowest first: a package may import its own and the ones before it, never one after it nor a
# command (the modules at tasks/'s top)
LAYERS = ("engine", "domain", "techniques", "launch", "studies")


def test_tasks_top_holds_the_commands_and_its_packages_import_downward_only():
    tops = sorted(p for p in (ROOT / "tasks").glob("*.py") if p.name != "__init__.py")
    assert all('if __name__ == "__main__":' in p.read_text(encoding="utf-8") for p in tops), \
        [p.name for p in tops if 'if __name__ == "__main__":' not in p.read_text(encoding="utf-8")]
    commands = {f"tasks.{p.stem}" for p in tops}
    for i, layer in enumerate(LAYERS):
        allowed = ("minibert", "optim", "tasks." + layer, *(f"tasks.{low}" for low in LAYERS[:i]))
        for path in sorted((ROOT / "tasks" / layer).glob("*.py")):
            wrong = {m for m in _imports(path) if m not in ("tasks",) and not m.startswith(allowed)}
            wrong |= {m for m in _imports(path) if m.startswith(tuple(commands))}
            assert not wrong, f"tasks/{layer}/{path.name} imports {sorted(wrong)}"


def test_no_import_circles():
    graph, seen, circles = _graph(), {}, []

    def visit(node, path):
        seen[node] = "open"
        for nxt in sorted(graph[node]):
            if seen.get(nxt) == "open":
                circles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in seen:
                visit(nxt, path + [nxt])
        seen[node] = "done"

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 5000))
    for node in sorted(graph):
        if node not in seen:
            visit(node, [node])
    assert not circles, " ; ".join(" → ".join(c) for c in circles)


def test_every_hook_and_role_is_in_the_one_documented_list():
    doc = callbacks_module.__doc__
    hooks = [n for n in vars(Callback) if n.startswith("on_")] + list(callbacks_module.ROLES)
    assert hooks == ["on_fit_start", "on_before_update", "on_after_update", "on_evaluate", "combine_losses",
                     "evaluated_model"]
    for name in hooks:
        assert f"    {name}(" in doc, name
    assert not [n for n in vars(Callback) if not n.startswith(("on_", "_", "state_dict", "load_state_dict"))
                and n not in callbacks_module.ROLES]


class _Proc:
    """One task of 4 batches of a linear model's squared error."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.data = [{"x": torch.randn(2, 3, generator=g), "y": torch.randn(2, 1, generator=g)} for _ in range(4)]

    def num_batches(self):
        return len(self.data)

    def batches(self, epoch):
        return iter(self.data)

    def loss(self, model, batch):
        return ((model(batch["x"]) - batch["y"]) ** 2).mean()


class _Averaged(Callback):
    def evaluated_model(self, trainer):
        return trainer.model


class _Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_fit_start(self, trainer):
        self.calls.append("fit_start")

    def on_before_update(self, trainer):
        self.calls.append("before")

    def on_after_update(self, trainer):
        self.calls.append("after")

    def on_evaluate(self, trainer):
        self.calls.append("evaluate")
        return {"recorded": len(self.calls)}


def test_hooks_run_in_order_and_a_role_takes_one_callback(tmp_path):
    recorder = _Recorder()
    trainer = Trainer(torch.nn.Linear(3, 1), {"t": _Proc()}, TrainConfig(epochs=1, out_dir=str(tmp_path)),
                      lambda m: {"score": 0.0}, [recorder], show_progress=False)
    history = trainer.fit()
    assert recorder.calls == ["fit_start"] + ["before", "after"] * 4 + ["evaluate"]
    assert history[-1]["recorded"] == 10
    with pytest.raises(ValueError, match="_Averaged and _Averaged both define evaluated_model"):
        Trainer(torch.nn.Linear(3, 1), {"t": _Proc()}, TrainConfig(epochs=1, out_dir=str(tmp_path)),
                lambda m: {"score": 0.0}, [_Averaged(), _Averaged()], show_progress=False)


def test_the_accelerator_of_one_process_is_the_identity():
    acc = Accelerator(use_gpu=False)
    assert (acc.rank, acc.world_size, acc.is_main, acc.device.type) == (0, 1, True, "cpu")
    assert acc.shard(7) == 7 and acc.mean({"a": 1.5}) == {"a": 1.5} and acc.broadcast({"x": 1}) == {"x": 1}
    model = acc.prepare(torch.nn.Linear(3, 1), loss_fn=None)
    assert acc.ddp is None and next(model.parameters()).device.type == "cpu"
    batch = {"x": torch.ones(2, 3), "n": 2}
    loss = acc.loss(lambda name, b: model(b["x"]).sum() * b["n"], "t", batch)
    assert loss.dtype == torch.float32 and torch.equal(loss, model(batch["x"]).sum() * 2)
    acc.barrier()  # nothing to wait for
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    acc.reseed_after_resume(seed=1, step=3)  # one process keeps the checkpoint's random state
    assert torch.equal(torch.rand(1), before)


# ---- a technique plugged in through the registry alone (docs/techniques.md: "Adding a technique") -------------

@dataclasses.dataclass(frozen=True)
class GradNoiseConfig:
    grad_noise: float = flag(0.0, "σ of Gaussian noise added to every gradient before the update (0: off)")

    def __post_init__(self):
        if self.grad_noise < 0:
            raise ValueError(f"--grad_noise must be >= 0, got {self.grad_noise}")


class GradNoiseCallback(Callback):
    def __init__(self, sigma: float, seed: int):
        self.sigma, self.generator = sigma, torch.Generator().manual_seed(seed)

    def on_before_update(self, trainer):
        for p in trainer.model.parameters():
            if p.grad is not None:
                p.grad.add_(torch.randn(p.grad.shape, generator=self.generator) * self.sigma)


class GradNoiseTechnique(Technique):
    name, summary, Config = "grad_noise", "Gaussian gradient noise", GradNoiseConfig
    clis = ("multitask", "classifier")
    arms = {"noise": (("--grad_noise", "0.01"), "gradient noise σ = 0.01")}
    excludes = {"pcgrad": "--grad_noise does not combine with --pcgrad (an example of a declared conflict)"}

    def enabled(self, cfg):
        return cfg.grad_noise > 0

    def callback(self, cfg, model, seed=0):
        return GradNoiseCallback(cfg.grad_noise, seed) if cfg.grad_noise > 0 else None


def test_a_technique_registered_in_one_line_gets_flags_checks_arms_and_its_hook(monkeypatch, capsys):
    from tasks import multitask
    monkeypatch.setitem(techniques.REGISTRY, "grad_noise", GradNoiseTechnique())
    from tasks.launch.configs import RunConfig
    spec = RunConfig.from_args(multitask.parse_args(["--grad_noise", "0.5"]), "multitask")
    (callback,) = techniques.callbacks(spec.techniques, torch.nn.Linear(3, 1), seed=0)
    assert isinstance(callback, GradNoiseCallback) and callback.sigma == 0.5
    assert techniques.arms()["noise"][0] == ("--grad_noise", "0.01")
    with pytest.raises(SystemExit):
        multitask.parse_args(["--help"])
    shown = capsys.readouterr().out
    assert "grad_noise: Gaussian gradient noise" in shown and "--grad_noise" in shown
    for argv, message in ((["--grad_noise", "-1"], "--grad_noise must be >= 0, got -1.0"),
                          (["--grad_noise", "0.1", "--pcgrad"], "--grad_noise does not combine with --pcgrad")):
        with pytest.raises(SystemExit):
            multitask.parse_args(argv)
        assert message in capsys.readouterr().err


@dataclasses.dataclass(frozen=True)
class WarmStartConfig:
    warm_start: str = flag("off", "on: zero and freeze the position embeddings before fine-tuning; only: and stop",
                           choices=("off", "on", "only"))


class WarmStartTechnique(Technique):
    """Work before fine-tuning, as the phases do, through the same hook: run.py calls no technique by name."""
    name, summary, Config = "warm_start", "a step before fine-tuning", WarmStartConfig
    clis = ("multitask",)

    def before_finetuning(self, cfg, parts):
        if cfg.warm_start == "off":
            return {}
        position = parts.model.bert.embeddings.position.weight
        position.data.zero_()
        position.requires_grad = False  # so fine-tuning leaves it as it is here
        return {"warm_start_tasks": len(parts.processors), "seed": parts.train_config.seed}

    def finetunes(self, cfg):
        return cfg.warm_start != "only"


def test_a_technique_works_before_fine_tuning_or_instead_of_it(monkeypatch, tiny_checkpoint, tiny_data, tmp_path):
    from tasks import multitask
    from tasks.domain.model import MultitaskBert
    from tasks.engine.checkpointing import read_jsonl
    monkeypatch.setitem(techniques.REGISTRY, "warm_start", WarmStartTechnique())
    base = ["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--epochs", "1", "--batch_size", "8",
            "--max_examples", "8", "--predictions_dir", str(tmp_path / "pred"), "--no-predict_test"]
    only = multitask.main(base + ["--out_dir", str(tmp_path / "only"), "--warm_start", "only", "--seed", "5"])
    assert only == {"warm_start_tasks": 3, "seed": 5}  # the run ended there: nothing trained
    assert not (tmp_path / "only" / "best.safetensors").exists()
    scores = multitask.main(base + ["--out_dir", str(tmp_path / "on"), "--warm_start", "on", "--seed", "5"])
    assert set(scores) == {"sst", "para", "sts", "overall"}
    final = read_jsonl(tmp_path / "on" / "metrics.jsonl")[-1]
    assert final["before_finetuning"] == {"warm_start_tasks": 3, "seed": 5}  # reported with the run's scores
    kept = MultitaskBert.from_pretrained(tmp_path / "on" / "model")  # the change reached the fine-tuned model
    assert not kept.bert.embeddings.position.weight.any()
