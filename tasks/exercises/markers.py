"""The exercises, found in the reference code itself: one comment line directly above a function
(or above its decorators) names the exercise it belongs to, with a one-line task and an optional hint:

    # exercise: attention — softmax(q kᵀ / √hs + mask) v; return the context and the probabilities. hint: ...
    def attention(q, k, v, mask=None, dropout_p=0.0, training=False):

Several functions may carry the same name (the exercise is then all of them: `heads` is split_heads and
merge_heads). The markers are comments, so the reference code has no runtime dependency on this package;
they are read here with `ast` and the line above each `def`. The order of the exercises is the order in which
docs/tour.md reads the code: FILES in this order, then line order within a file.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[2]  # the project (the reference, or a student copy)

# The files that may hold markers, in docs/tour.md's reading order.
FILES = ("minibert/functional.py", "minibert/model.py", "minibert/checkpoint.py", "optim/adamw.py",
         "optim/pcgrad.py", "tasks/engine/trainer.py", "tasks/domain/model.py", "tasks/domain/losses.py")

MARKER = re.compile(r"^\s*# exercise: (?P<name>[a-z][a-z0-9_]*) (?:—|--|-) (?P<task>.+?)(?: hint: (?P<hint>.+))?\s*$")
ANY_MARKER = re.compile(r"^\s*#\s*exercise\b")  # what looks like a marker: it must then parse


class MarkerError(ValueError):
    """A marker that does not parse or does not sit directly above a function; names the file and line."""


@dataclass(frozen=True)
class Function:
    """One marked function: where it is and what its marker says."""
    exercise: str  # the exercise's name
    file: str  # relative to the project root, e.g. "minibert/functional.py"
    qualname: str  # "attention" or "SelfAttention.forward"
    marker_line: int  # 1-based line of the marker comment
    task: str
    hint: Optional[str]

    @property
    def where(self) -> str:
        return f"{self.file}:{self.qualname}"


@dataclass
class Exercise:
    name: str
    functions: List[Function] = field(default_factory=list)

    @property
    def task(self) -> str:
        return self.functions[0].task

    @property
    def hint(self) -> Optional[str]:
        return next((f.hint for f in self.functions if f.hint), None)

    @property
    def where(self) -> str:
        first = self.functions[0]
        return ", ".join([first.where] + [f.qualname for f in self.functions[1:]])


def _functions(tree: ast.Module) -> Dict[int, Tuple[str, ast.AST]]:
    """{first line of the def or its first decorator: (qualname, node)} for module functions and methods."""
    found = {}

    def visit(body, prefix):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                found[first] = (prefix + node.name, node)
            elif isinstance(node, ast.ClassDef):
                visit(node.body, prefix + node.name + ".")
    visit(tree.body, "")
    return found


def parse_file(root: Path, rel: str) -> List[Tuple[Function, ast.AST]]:
    """Every marked function of one file, with its ast node; a marker not above a function raises MarkerError."""
    path = Path(root) / rel
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    functions = _functions(ast.parse(text, filename=str(path)))
    out = []
    for i, line in enumerate(lines, start=1):
        if not ANY_MARKER.match(line):
            continue
        match = MARKER.match(line)
        if match is None:
            raise MarkerError(f"{path}:{i}: a marker must read '# exercise: NAME — TASK[ hint: HINT]', got: {line.strip()}")
        if i + 1 not in functions:
            raise MarkerError(f"{path}:{i}: the marker for {match['name']!r} is not directly above a def (or its decorators)")
        qualname, node = functions[i + 1]
        out.append((Function(match["name"], rel, qualname, i, match["task"].strip(), (match["hint"] or "").strip() or None), node))
    return out


def find_exercises(root: Path = ROOT) -> List[Exercise]:
    """The exercises of a project in tour order (the reference and a student copy give the same list)."""
    exercises: Dict[str, Exercise] = {}
    for rel in FILES:
        if not (Path(root) / rel).is_file():
            raise MarkerError(f"{Path(root) / rel} is missing: is {root} a minibert project?")
        for function, _ in parse_file(root, rel):
            exercises.setdefault(function.exercise, Exercise(function.exercise)).functions.append(function)
    return list(exercises.values())
