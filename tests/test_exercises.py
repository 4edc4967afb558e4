"""The coursework exercises (tasks/exercises, docs/exercises.md): the markers, the student copy, the grader.

The reference passes every check; a fresh copy fails every one with "not started"; restoring one reference body
in a copy turns exactly that exercise ✓; a wrong body is a ✗ naming the tensor that differs.
"""
import ast
import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _forked import HANG_GUARD_S

from tasks.exercises.checks import CHECKS
from tasks.exercises.grading import NOT_STARTED, PASS, grade
from tasks.exercises.maker import make, restore
from tasks.exercises.markers import FILES, ROOT, MarkerError, find_exercises, parse_file


EXERCISES = find_exercises(ROOT)
NAMES = [e.name for e in EXERCISES]


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    dest = tmp_path_factory.mktemp("student") / "copy"
    make(dest, ROOT)
    return dest


def run_in(folder: Path, code: str, timeout: int = HANG_GUARD_S) -> subprocess.CompletedProcess:
    """Python in `folder`, whose packages (minibert, optim, tasks) then shadow the installed reference."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=folder, capture_output=True, text=True,
                          timeout=timeout, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})


def test_every_marker_parses_and_names_a_function_that_exists_with_a_check():
    assert 12 <= len(EXERCISES) <= 16 and len(set(NAMES)) == len(NAMES)
    assert set(NAMES) == set(CHECKS), "every exercise has a check, every check an exercise"
    for exercise in EXERCISES:
        assert exercise.task and exercise.functions
        for function in exercise.functions:
            module = importlib.import_module(function.file[:-3].replace("/", "."))
            obj = module
            for part in function.qualname.split("."):
                obj = getattr(obj, part)
            assert callable(obj), function.where
    # tour order: the files in docs/tour.md's order, the reference's first exercise is the math
    assert NAMES[:2] == ["gelu", "layer_norm"] and NAMES.index("attention") < NAMES.index("adamw") < NAMES.index("pcgrad")


def test_a_bad_marker_is_an_error_naming_file_and_line(tmp_path):
    (tmp_path / "m.py").write_text("x = 1\n# exercise: oops no dash\ndef f():\n    return 1\n")
    with pytest.raises(MarkerError, match=r"m.py:2: a marker must read"):
        parse_file(tmp_path, "m.py")
    (tmp_path / "m.py").write_text("# exercise: f — Task.\n\nx = 1\n")
    with pytest.raises(MarkerError, match=r"m.py:1: the marker for 'f' is not directly above a def"):
        parse_file(tmp_path, "m.py")


def test_the_reference_passes_every_check():
    results = [grade(e, CHECKS[e.name], ROOT) for e in EXERCISES]
    assert [(r.name, r.status, r.detail) for r in results if r.status != PASS] == []


def test_the_copy_keeps_signatures_docstrings_shape_comments_and_nothing_else_of_the_bodies(copy):
    assert not (copy / "data").exists() and not (copy / ".git").exists() and not list(copy.rglob("__pycache__"))
    assert (copy / "tasks/exercises/reference.safetensors").is_file()
    for rel in FILES:
        ref = {f.qualname: n for f, n in parse_file(ROOT, rel)}
        ours = {f.qualname: n for f, n in parse_file(copy, rel)}
        assert set(ref) == set(ours)
        for name, node in ours.items():
            assert ast.unparse(node.args) == ast.unparse(ref[name].args)
            assert ast.get_docstring(node) == ast.get_docstring(ref[name])
            code = [s for s in node.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
            assert len(code) == 1 and isinstance(code[0], ast.Raise), f"{rel}:{name}"
    text = (copy / "minibert/model.py").read_text()
    assert "        # x: (B, T, C)\n" in text and "# returns: (B, T, C), (B, nh, T, T) or None" in text
    assert "cpu_dropout" not in text  # the solution's other comments and code are gone
    assert (copy / "tasks/launch/run.py").read_text() == (ROOT / "tasks/launch/run.py").read_text()  # unmarked: as it is


def test_make_refuses_a_folder_in_use_and_one_inside_the_project(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        make(tmp_path / "x", ROOT)
    with pytest.raises(ValueError, match="inside the project"):
        make(ROOT / "runs" / "copy", ROOT)


LOOP = """
    import ast, json, sys
    from pathlib import Path
    copy, ref, names = Path.cwd(), Path({ref!r}), {names!r}
    sys.path.insert(0, str(copy))
    from tasks.exercises.maker import restore
    from tasks.exercises.markers import FILES, parse_file
    as_made = {{rel: (copy / rel).read_text() for rel in FILES}}  # the copy's files, every body a stub

    def graded(only=None):
        \"\"\"{{name: [status, detail]}} of every exercise (or of `only`), the files imported afresh.\"\"\"
        for m in [m for m in sys.modules if m.split(".")[0] in ("minibert", "optim", "tasks")]:
            del sys.modules[m]  # the files changed: import them again
        from tasks.exercises.checks import CHECKS
        from tasks.exercises.grading import grade
        from tasks.exercises.markers import ROOT, find_exercises
        assert ROOT == copy, ROOT
        results = (grade(e, CHECKS[e.name], copy) for e in find_exercises(copy) if only in (None, e.name))
        return {{r.name: [r.status, r.detail] for r in results}}

    import contextlib, io
    from tasks.exercises.__main__ import main
    from tasks.exercises.stored import PATH
    assert copy in PATH.parents, PATH  # never the reference's own file
    before, err = PATH.read_bytes(), io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            main(["generate"])
            code = 0
        except SystemExit as stop:
            code = stop.code
    report = {{"generate": {{"code": code, "stderr": err.getvalue(), "unchanged": PATH.read_bytes() == before}},
              "stubs": {{}}, "fresh": graded(), "restored": {{}}}}
    for rel in FILES:  # where each exercise's stubs raise: file:line
        for function, node in parse_file(copy, rel):
            line = next(s.lineno for s in node.body if isinstance(s, ast.Raise))
            report["stubs"].setdefault(function.exercise, []).append(f"{{rel}}:{{line}}")
    import tasks.multitask, tasks.classifier, tasks.predict, gan.train  # the copy imports
    assert Path(tasks.multitask.__file__).parent.parent == copy
    for name in names:
        restore(copy, name, ref)
        report["restored"][name] = graded(only=name)[name]
        for rel, text in as_made.items():
            (copy / rel).write_text(text)
    print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def loop_report(copy):
    """One process in a fresh copy: `generate` tried first, then every exercise graded fresh, then each
    reference body restored alone and its exercise graded (LOOP)."""
    out = run_in(copy, LOOP.format(ref=str(ROOT), names=NAMES))
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_fresh_copy_stops_each_check_at_its_own_stub_and_restoring_one_body_passes_exactly_that_exercise(
        loop_report):
    """Fresh, every check is "not started" by its own exercise's stub: it calls no other exercise's function
    before its own, so with any other body restored it still stops there. Restored alone, each body passes its
    check: the check needs no other exercise's code. So restoring one body turns exactly that exercise ✓."""
    fresh = loop_report["fresh"]
    assert {name: status for name, (status, _) in fresh.items()} == {name: NOT_STARTED for name in NAMES}
    for name in NAMES:
        detail = fresh[name][1]
        assert detail in [f"raises NotImplementedError at {where}" for where in loop_report["stubs"][name]], \
            (name, detail, loop_report["stubs"][name])
        assert loop_report["restored"][name] == [PASS, ""], (name, loop_report["restored"][name])


def test_generate_in_a_copy_refuses_and_leaves_the_stored_tensors_as_they_were(loop_report):
    refused = loop_report["generate"]
    assert refused["code"] == 2 and "generate only in the reference (file unchanged)" in refused["stderr"]
    assert refused["unchanged"]


WRONG = {  # (exercise, reference line, wrong line, what the report must name)
    "attention": ("scores = (q / math.sqrt(q.size(-1))) @ k.transpose(-2, -1)", "scores = q @ k.transpose(-2, -1)",
                  "attention probabilities with padding (B, nh, T, T): max |error|"),
    "adamw": ("bc1, bc2 = _bias_corrections(t, beta1, beta2, correct_bias)", "bc1, bc2 = 1.0, 1.0",
              "weight after the coursework's 1000 AdamW steps (correct_bias=True): max |error|"),
    "layer": ("x = self.attn_norm(x + self.drop(a))", "x = x + self.drop(self.attn_norm(a))",
              "layer output (B, T, C) on MiniLM's layer 0: max |error|"),
    "heads": ("return x.view(B, T, num_heads, C // num_heads).transpose(1, 2)",
              "return x.view(B, num_heads, T, C // num_heads)", "split_heads(x, 3) (B, nh, T, hs): max |error|"),
}


def test_a_wrong_body_is_a_cross_naming_the_tensor_max_error_and_tolerance(tmp_path):
    """Each of WRONG's exercises restored with one line made wrong, in one copy, graded by one `check` process
    with two exercises left as stubs: the table, a cross with the tensor under each wrong one, "not started"."""
    dest = tmp_path / "copy"
    make(dest, ROOT)
    for name, (right, wrong, _) in WRONG.items():
        restore(dest, name, ROOT)
        rel = next(e for e in EXERCISES if e.name == name).functions[0].file
        text = (dest / rel).read_text()
        assert right in text, name
        (dest / rel).write_text(text.replace(right, wrong))
    out = subprocess.run([sys.executable, "-m", "tasks.exercises", "check", *WRONG, "gelu", "pcgrad"], cwd=dest,
                         capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert out.returncode == 1, out.stderr
    lines = out.stdout.splitlines()
    for name, (_, _, message) in WRONG.items():  # its row is a cross, and the line under it names the tensor
        row = next(i for i, line in enumerate(lines) if f"  {name} " in line)
        assert "✗" in lines[row] and message in lines[row + 1], (name, out.stdout)
    assert out.stdout.count("> tolerance") >= len(WRONG) and f"0 of {len(WRONG) + 2} passed" in out.stdout
    for number, name in ((1, "gelu"), (11, "pcgrad")):  # the stubs: numbered as in the list, not started
        row = next(line for line in lines if f"{number:>2}  {name}" in line)
        assert "not started" in row, (name, out.stdout)


def test_check_rejects_an_unknown_name_before_grading_anything(capsys):
    from tasks.exercises.__main__ import main  # in any folder: here, the reference
    with pytest.raises(SystemExit) as exit_:
        main(["check", "gleu"])
    assert exit_.value.code == 2 and "no exercise named gleu; the exercises are: gelu, layer_norm" in capsys.readouterr().err


def test_list_names_every_function_with_its_task_and_hint(capsys):
    from tasks.exercises.__main__ import main
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(" 1. gelu\n    minibert/functional.py:gelu: Exact GELU")
    assert "    optim/adamw.py:_torch_single: torch's step" in out and "      hint: m.lerp_(g, 1 − β₁)" in out
    assert f"\n{len(NAMES)}. {NAMES[-1]}\n" in out
