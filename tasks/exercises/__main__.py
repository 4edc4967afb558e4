"""python -m tasks.exercises {list, make DIR, check [NAME ...], generate}: see docs/exercises.md."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from tasks.launch.cli import fail

from .markers import ROOT, MarkerError, find_exercises

PROG = "python -m tasks.exercises"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description="Coursework exercises made from the reference code: "
                                     "a student copy and its grader (docs/exercises.md).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{list,make,check,generate}")
    sub.add_parser("list", help="the exercises in order, with their task and hint")
    make = sub.add_parser("make", help="write a student copy of this project into DIR")
    make.add_argument("dir", metavar="DIR", help="a new (or empty) folder")
    check = sub.add_parser("check", help="grade the exercises of this project (a student copy or the reference)")
    check.add_argument("names", nargs="*", metavar="NAME", help="only these exercises (default: all)")
    sub.add_parser("generate", help="maintainers: rewrite reference.safetensors from the reference code")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        exercises = find_exercises(ROOT)
    except MarkerError as err:
        fail(PROG, err)
    if args.command == "list":
        for n, e in enumerate(exercises, start=1):
            print(f"{n:>2}. {e.name}")
            for f in e.functions:
                print(f"    {f.where}: {f.task}" + (f"\n      hint: {f.hint}" if f.hint else ""))
        return 0
    if args.command == "make":
        from .maker import make
        try:
            files = make(args.dir, ROOT)
        except (FileExistsError, ValueError) as err:
            fail(PROG, err)
        print(f"wrote a student copy of {ROOT} to {args.dir}: {len(exercises)} exercises in {len(files)} files")
        print(f"in it: pip install -e . (or run from its root), then {PROG} check")
        return 0
    if args.command == "generate":
        from .stored import PATH, generate
        from .checks import CHECKS
        from .grading import PASS, grade
        before = PATH.read_bytes() if PATH.is_file() else None
        try:
            generate()
            failed = [e.name for e in exercises if grade(e, CHECKS[e.name], ROOT).status != PASS]
        except NotImplementedError:
            failed = ["some (not started)"]
        if failed:  # a copy's code would store its own answers: put the file back as it was
            PATH.write_bytes(before) if before is not None else PATH.unlink(missing_ok=True)
            fail(PROG, f"the code here fails {', '.join(failed)}: generate only in the reference (file unchanged)")
        print(f"wrote {PATH}")
        return 0
    from .checks import CHECKS
    from .grading import grade, table
    missing = [e.name for e in exercises if e.name not in CHECKS]
    if missing:
        fail(PROG, f"no check for the exercises {', '.join(missing)} (tasks/exercises/checks.py's CHECKS)")
    names = {e.name: n for n, e in enumerate(exercises, start=1)}
    unknown = [n for n in args.names if n not in names]
    if unknown:
        fail(PROG, f"no exercise named {', '.join(unknown)}; the exercises are: {', '.join(names)}")
    chosen = [e for e in exercises if not args.names or e.name in args.names]
    results = [grade(e, CHECKS[e.name], ROOT) for e in chosen]
    print(table(results, [names[e.name] for e in chosen]))
    return 0 if all(r.status == "✓" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
