"""Running the checks and saying what they found, in plain words.

Each check raises `Mismatch` at its first failing comparison ("context: max |error| 0.41 > tolerance 1e-05 +
1e-04·|expected|"); a NotImplementedError means the exercise is not started; any other exception is a ✗
that names the student's line it came from.
"""
from __future__ import annotations

import contextlib
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional

import torch

PASS, FAIL, NOT_STARTED = "✓", "✗", "not started"


class Mismatch(AssertionError):
    """A comparison that failed; the message is the report's sentence."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise Mismatch(message)


def compare(name: str, actual, expected: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """`actual` must be a tensor of `expected`'s shape within atol + rtol·|expected| everywhere."""
    if not isinstance(actual, torch.Tensor):
        raise Mismatch(f"{name}: expected a tensor of shape {tuple(expected.shape)}, got {type(actual).__name__}")
    if tuple(actual.shape) != tuple(expected.shape):
        raise Mismatch(f"{name}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    if not torch.isfinite(a).all() and torch.isfinite(e).all():
        raise Mismatch(f"{name}: has NaN or inf where the reference has none")
    error = (a - e).abs()
    excess = error - (atol + rtol * e.abs())
    if (excess > 0).any():
        at = tuple(int(i) for i in torch.nonzero(excess == excess.max())[0])
        raise Mismatch(f"{name}: max |error| {error.max().item():.3g} > tolerance {atol:g} + {rtol:g}·|expected| "
                       f"(worst at index {at}: got {a[at].item():.6g}, expected {e[at].item():.6g})")


@contextlib.contextmanager
def patched(obj, **values) -> Iterator[None]:
    """Set attributes for the duration of a check (another exercise's function replaced by the check's own
    formula, so that each exercise is graded on its own code alone)."""
    old = {k: getattr(obj, k) for k in values}
    try:
        for k, v in values.items():
            setattr(obj, k, v)
        yield
    finally:
        for k, v in old.items():
            setattr(obj, k, v)


@dataclass
class Result:
    name: str
    where: str
    status: str
    detail: str = ""


def _student_frame(err: BaseException, root: Path) -> Optional[str]:
    """'file:line' of the innermost frame in the project outside this package (where the error came from)."""
    here = Path(__file__).resolve().parent
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        path = Path(frame.filename).resolve()
        if root in path.parents and here not in path.parents:
            return f"{path.relative_to(root)}:{frame.lineno}"
    return None


def grade(exercise, check, root: Path) -> Result:
    torch.manual_seed(0)
    try:
        check()
    except NotImplementedError as err:
        where = _student_frame(err, root)
        return Result(exercise.name, exercise.where, NOT_STARTED, f"raises NotImplementedError at {where}" if where else "")
    except Mismatch as err:
        return Result(exercise.name, exercise.where, FAIL, str(err))
    except Exception as err:  # the student's code failed: say what and where
        where = _student_frame(err, root)
        return Result(exercise.name, exercise.where, FAIL,
                      f"{type(err).__name__}: {err}" + (f" (at {where})" if where else ""))
    return Result(exercise.name, exercise.where, PASS)


def table(results: List[Result], numbers: List[int]) -> str:
    width = max(len(r.name) for r in results)
    where = max(len(r.where) for r in results)
    lines = [f"{'#':>2}  {'exercise':<{width}}  {'where':<{where}}  result"]
    for n, r in zip(numbers, results):
        lines.append(f"{n:>2}  {r.name:<{width}}  {r.where:<{where}}  {r.status}")
        if r.detail and r.status != PASS:
            lines.append(f"{'':>2}  {'':<{width}}  └ {r.detail}")
    done = sum(r.status == PASS for r in results)
    lines.append(f"{done} of {len(results)} passed" + ("" if done == len(results) else
                                                       "; docs/exercises.md has each task and its hint"))
    return "\n".join(lines)
