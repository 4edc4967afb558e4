"""Where tests find the CS224N data files, and a tiny reader for them.

Lookup order: $MINIBERT_DATA_DIR, else <repo>/data (filled by `python -m tasks.fetch_data`), else
<repo>/../shared/data. Tests that need real data skip, saying where they looked, when none exists.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]


def candidate_dirs() -> List[Path]:
    env = os.environ.get("MINIBERT_DATA_DIR")
    if env:  # an explicit choice wins, even when wrong: better to skip loudly than read other data
        return [Path(env).expanduser()]
    return [REPO / "data", REPO.parent / "shared" / "data"]


def find_data_dir() -> Optional[Path]:
    return next((d for d in candidate_dirs() if d.is_dir()), None)


def data_file(name: str) -> Path:
    """Path of a real data file, or pytest.skip naming the folders searched."""
    folder = find_data_dir()
    if folder is None:
        pytest.skip(f"no data folder: looked in {', '.join(map(str, candidate_dirs()))} "
                    "(set MINIBERT_DATA_DIR or run `python -m tasks.fetch_data`)")
    path = folder / name
    if not path.is_file():
        pytest.skip(f"data file {name} not in {folder}")
    return path


def read_columns(name: str, *columns: str, limit: Optional[int] = None) -> List[Tuple[str, ...]]:
    """Raw (stripped) values of `columns` from a real file, rows with an empty value left out."""
    rows = []
    with open(data_file(name), newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            values = tuple((row.get(c) or "").strip() for c in columns)
            if all(values):
                rows.append(values)
            if limit is not None and len(rows) >= limit:
                break
    return rows
