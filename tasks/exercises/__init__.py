"""Coursework exercises made from the reference code (docs/exercises.md).

    python -m tasks.exercises list              the exercises, in the order docs/tour.md reads the code
    python -m tasks.exercises make DIR          a student copy: each marked body is `raise NotImplementedError`
    python -m tasks.exercises check [NAME ...]  grade them (in the copy or the reference): ✓ / ✗ / not started

markers.py finds the exercises (a comment line above each function), maker.py writes and restores copies,
checks.py and checks_model.py grade them against the references of tests/ (stored.py: the stored tensors),
grading.py runs the checks and words the report.
"""
