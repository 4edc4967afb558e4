"""Make a student copy: the project with each marked function's body replaced by `raise NotImplementedError`.

What a replaced function keeps: its marker, decorators, signature and docstring, and the shape comments of
its body, each rewritten as a comment line naming what it describes (`x = ...  # (B, T, C)` becomes
`# x: (B, T, C)`, a `return ...  # (B, C)` becomes `# returns: (B, C)`). Every other comment of the body is
dropped with the code, since it explains the solution. Everything unmarked is copied as it is, so the copy
installs (`pip install -e .`) and runs wherever its exercises are done.

Not copied: git's folders and ignored files where the project is a git checkout (data/, runs/, caches, ...),
and EXCLUDED otherwise. `restore` puts a reference body back into a copy (how the tests, and a teacher
handing out a solution, turn one exercise at a time back into the reference).
"""
from __future__ import annotations

import ast
import io
import os
import re
import shutil
import subprocess
import textwrap
import tokenize
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .markers import FILES, ROOT, Function, find_exercises, parse_file

EXCLUDED = {".git", "data", "runs", "predictions", "checkpoints", "__pycache__", "build", "dist", ".pytest_cache"}
ALWAYS = ("tasks/exercises/reference.safetensors",)  # the grader's stored tensors travel with every copy
SHAPE = re.compile(r"\((?:[A-Za-z0-9_]+,\s*)+[A-Za-z0-9_]*\)")  # (B, T, C), (T,), (B, nh, T, T), (B, 4C)


def _project_files(root: Path) -> List[str]:
    """The files to copy, relative to root: git's tracked and unignored files, else a walk without EXCLUDED."""
    if (root / ".git").exists():
        try:
            out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root, check=True,
                                 capture_output=True).stdout.decode("utf-8")
            files = [f for f in out.split("\0") if f and (root / f).is_file()]
            files += [f for f in ALWAYS if (root / f).is_file() and f not in files]  # .gitignore has *.safetensors
            return [f for f in files if not set(Path(f).parts) & EXCLUDED]
        except (OSError, subprocess.CalledProcessError):
            pass  # no git: walk instead
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in EXCLUDED and not d.endswith(".egg-info"))
        files += [os.path.relpath(os.path.join(folder, n), root) for n in sorted(names) if not n.endswith(".pyc")]
    return files


def body_span(lines: Sequence[str], node: ast.AST) -> Tuple[int, int]:
    """(first, last) 0-based lines of a function's body after its docstring, with the comment lines that
    open the body; the signature, decorators and docstring stay outside."""
    body = node.body
    has_doc = isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
        and isinstance(body[0].value.value, str)
    if has_doc and len(body) == 1:
        raise ValueError(f"line {node.lineno}: {node.name} has a docstring and no body to replace")
    if body[0].lineno == node.lineno:
        raise ValueError(f"line {node.lineno}: {node.name}'s body is on its def line; put it on its own lines")
    first = body[1].lineno - 1 if has_doc else body[0].lineno - 1
    floor = body[0].end_lineno if has_doc else node.lineno  # never reach into the docstring or signature
    while first - 1 >= floor and lines[first - 1].strip().startswith("#"):
        first -= 1  # comments that open the body (after the docstring) go with it
    return first, body[-1].end_lineno - 1


def _shape_comments(lines: Sequence[str], first: int, last: int, node: ast.AST) -> List[str]:
    """The body's comments that carry a shape, each as `name: comment` (the assignment's target, or `returns`)."""
    statements = [s for s in ast.walk(node) if isinstance(s, ast.stmt) and s is not node]
    text = "".join(line + "\n" for line in lines[first:last + 1])
    kept = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type != tokenize.COMMENT or not SHAPE.search(tok.string):
            continue
        comment, line_no = tok.string.lstrip("#").strip(), first + tok.start[0]  # 1-based line in the file
        owner = min((s for s in statements if s.lineno <= line_no <= s.end_lineno),
                    key=lambda s: s.end_lineno - s.lineno, default=None)
        if lines[line_no - 1].strip().startswith("#") or owner is None:
            kept.append(comment)
        elif isinstance(owner, ast.Return):
            kept.append(f"returns: {comment}")
        elif isinstance(owner, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            target = owner.targets[0] if isinstance(owner, ast.Assign) else owner.target
            kept.append(f"{ast.unparse(target)}: {comment}")
        else:
            kept.append(comment)
    return kept


def stub(lines: Sequence[str], node: ast.AST, function: Function) -> Tuple[int, int, List[str]]:
    """(first, last, new lines) that replace one marked function's body in the student copy."""
    first, last = body_span(lines, node)
    indent = " " * node.body[-1].col_offset
    opening = f"{indent}raise NotImplementedError("
    pieces = textwrap.wrap(f"exercise {function.exercise!r}: {function.task}", width=max(40, 116 - len(opening)),
                           drop_whitespace=False)
    raise_lines = [(opening if i == 0 else " " * len(opening)) + _quoted(p) + (")" if i == len(pieces) - 1 else "")
                   for i, p in enumerate(pieces)]
    return first, last, [f"{indent}# {c}" for c in _shape_comments(lines, first, last, node)] + raise_lines


def student_text(root: Path, rel: str) -> Optional[str]:
    """The student version of one file, or None if it has no marker."""
    marked = parse_file(root, rel)
    if not marked:
        return None
    lines = (Path(root) / rel).read_text(encoding="utf-8").splitlines()
    for first, last, new in sorted((stub(lines, node, f) for f, node in marked), reverse=True):
        lines[first:last + 1] = new  # bottom-up, so the earlier spans' line numbers still hold
    text = "\n".join(lines) + "\n"
    ast.parse(text, filename=rel)  # the copy must stay importable
    return text


def make(dest, root: Path = ROOT) -> List[str]:
    """Write the student copy into `dest` (a new or empty folder); returns the files whose bodies were replaced."""
    root, dest = Path(root).resolve(), Path(dest).resolve()
    if dest == root or root in dest.parents:
        raise ValueError(f"{dest} is inside the project {root}: make the copy somewhere else")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} exists and is not an empty folder: choose a new one")
    find_exercises(root)  # every marker parses before anything is written
    replaced = {rel: student_text(root, rel) for rel in FILES}
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel in _project_files(root):
        target = tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if replaced.get(rel) is not None:
            target.write_text(replaced[rel], encoding="utf-8")
        else:
            shutil.copy2(root / rel, target)
    if dest.exists():
        dest.rmdir()
    tmp.rename(dest)  # all or nothing: a failed make leaves no half copy behind
    return [rel for rel, text in replaced.items() if text is not None]


def _marked_nodes(root: Path, rel: str) -> Dict[str, Tuple[Function, ast.AST]]:
    return {f.qualname: (f, node) for f, node in parse_file(root, rel)}


def restore(copy_root, name: str, reference_root: Path = ROOT) -> List[str]:
    """Put the reference's bodies of exercise `name` back into a copy; returns the functions restored."""
    copy_root, restored = Path(copy_root), []
    exercise = next((e for e in find_exercises(reference_root) if e.name == name), None)
    if exercise is None:
        raise KeyError(f"no exercise named {name!r}")
    for rel in dict.fromkeys(f.file for f in exercise.functions):
        ref_lines = (Path(reference_root) / rel).read_text(encoding="utf-8").splitlines()
        lines = (copy_root / rel).read_text(encoding="utf-8").splitlines()
        ref_nodes, nodes = _marked_nodes(reference_root, rel), _marked_nodes(copy_root, rel)
        spans = []
        for function in (f for f in exercise.functions if f.file == rel):
            ref_first, ref_last = body_span(ref_lines, ref_nodes[function.qualname][1])
            spans.append((*body_span(lines, nodes[function.qualname][1]), ref_lines[ref_first:ref_last + 1]))
            restored.append(function.where)
        for first, last, new in sorted(spans, reverse=True):
            lines[first:last + 1] = new
        (copy_root / rel).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return restored


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
