"""The one study runner: a grid of cells on one budget, each finished cell's record kept, a killed grid continued.

A study (the ablation, the multitask levers, the GAN study) is a list of cells, each a dict of the fields that
name it (`key`: e.g. arm and seed), and a function that runs one cell and returns its record. The runner

- keeps every finished cell's record as one line of `<out_dir>/results.jsonl`, rewritten atomically after each
  cell, so a kill loses at most the cell it was in (which resumes from its own checkpoint where its study keeps
  one);
- refuses to mix budgets: every record carries the budget its cell ran on (the settings all cells share), and
  a results file made on another budget needs another --out_dir;
- skips, on a rerun, the cells already recorded, and calls `after(records)` after each new one, where the study
  rewrites its tables and charts (tasks/studies/report.py) from the records (paired statistics:
  tasks/studies/stats.py).

    study = Study("runs/x", key=("arm", "seed"), budget={"epochs": 3}, resume=args.resume)
    study.run([{"arm": a, "seed": s} for s in seeds for a in arms], run_cell, after=write_tables)
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence

from tqdm.auto import tqdm

from ..engine.checkpointing import read_jsonl, write_jsonl


class Study:
    def __init__(self, out_dir, key: Sequence[str], budget: Optional[dict] = None, resume: bool = False,
                 key_defaults: Optional[dict] = None, budget_defaults: Optional[dict] = None,
                 legacy: Optional[Callable[[], List[dict]]] = None):
        """key_defaults: a key field's value in records written before the field existed; budget_defaults: the
        same for the budget (a grid from before a flag existed ran at its default); legacy: reads the records of
        an older results file when there is no results.jsonl yet."""
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / "results.jsonl"
        self.key, self.key_defaults = tuple(key), dict(key_defaults or {})
        self.budget = dict(budget or {})
        self.records: List[dict] = read_jsonl(self.path) if self.path.is_file() else (legacy() if legacy else [])
        if self.records and not resume:
            sys.exit(f"{self.path} already holds {len(self.records)} cells: pass --resume to continue it, "
                     "or a new --out_dir")
        for r in self.records:  # one table, one budget
            old = {**{k: v for k, v in (budget_defaults or {}).items() if k in self.budget},
                   **r.get("budget", self.budget)}  # (a record without one predates the field)
            if old != self.budget:
                sys.exit(f"{self.path} holds cells run with another budget ({old}, not {self.budget}): "
                         "use another --out_dir")

    def cell_key(self, cell: dict) -> tuple:
        return tuple(cell.get(k, self.key_defaults.get(k)) for k in self.key)

    def find(self, cell: dict) -> Optional[dict]:
        """The finished record of this cell, or None."""
        key = self.cell_key(cell)
        return next((r for r in self.records if self.cell_key(r) == key), None)

    def add(self, cell: dict, record: dict) -> dict:
        record = {**cell, **record, "budget": self.budget}
        self.records.append(record)
        write_jsonl(self.path, self.records)
        return record

    def todo(self, cells: Iterable[dict]) -> List[dict]:
        """The cells not yet recorded, in order."""
        return [c for c in cells if self.find(c) is None]

    def run(self, cells: Iterable[dict], run_cell: Callable[[dict], dict],
            after: Optional[Callable[[List[dict]], None]] = None, desc: str = "grid",
            name: Callable[[dict], str] = lambda c: "/".join(str(v) for v in c.values())) -> List[dict]:
        """Run every cell not yet recorded, in order; return each cell's record (old or new)."""
        cells = list(cells)
        todo = self.todo(cells)
        if cells:
            print(f"{len(cells)} cells, {len(cells) - len(todo)} already finished, {len(todo)} to run; "
                  f"results in {self.path}", flush=True)
        bar = tqdm(todo, desc=desc, dynamic_ncols=True, position=0, disable=not todo)
        for cell in bar:
            bar.set_postfix(cell=name(cell))
            self.add(cell, run_cell(cell))
            if after:
                after(self.records)
        return [self.find(c) for c in cells]
