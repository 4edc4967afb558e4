"""Child processes forked from the test process, for the tests whose point is a second process (a lock holder,
a run killed with SIGKILL, two DDP ranks) rather than a fresh interpreter: the child starts with the test's
imports done, where a fresh `python` spends seconds of CPU importing torch before its first line.

Forking is safe only from a single-threaded process (a child gets no other thread, and a lock another thread
held stays held in it forever), so it is refused otherwise. The suite keeps one intra-op thread and no tqdm
monitor thread (conftest.py) so that it holds.
"""
import multiprocessing
import threading


def check_single_threaded() -> None:
    others = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    if others:
        raise RuntimeError(f"cannot fork safely: threads {others} are running in the test process")


def forked(target, *args) -> multiprocessing.Process:
    """target(*args) in a forked child, started; join() it, or kill it by its .pid."""
    check_single_threaded()
    proc = multiprocessing.get_context("fork").Process(target=target, args=args, daemon=True)
    proc.start()
    return proc
