"""A second process for the tests whose point is a second process (a lock holder, a run killed with SIGKILL,
two DDP ranks), not a fresh interpreter: where it is safe, the child is forked from the test process and starts
with the test's imports done, where a fresh `python` spends seconds of CPU importing torch first.

Forking is safe only when no other thread can hold a lock the child needs: no other Python thread (the suite
runs no tqdm monitor and one intra-op thread, conftest.py), and no accelerator, whose autograd device threads
torch starts at the first backward pass (a forked child then refuses to run backward). Otherwise the child is
spawned: the same function in a fresh interpreter, only slower. The targets are module-level functions, so
that either way works.
"""
import multiprocessing
import os
import threading

import torch

# How long a test waits on another process before calling it hung: a guard, not a speed check. The waits return
# as soon as the child acts; on a loaded machine (the suite under `nice` beside a training grid) a child taking
# minutes of wall time for seconds of CPU is normal, and a tight limit failed the suite there (session 16).
HANG_GUARD_S = 1800


def fork_is_safe() -> bool:
    others = [t for t in threading.enumerate() if t is not threading.current_thread()]
    mps = getattr(torch.backends, "mps", None)
    return not others and torch.cuda.device_count() == 0 and not (mps is not None and mps.is_available())


def start_method() -> str:
    """fork where it is safe, else spawn; MINIBERT_TEST_START_METHOD=spawn (or fork) sets it."""
    return os.environ.get("MINIBERT_TEST_START_METHOD") or ("fork" if fork_is_safe() else "spawn")


def context():
    """The multiprocessing context of the tests' children (for their Events and Queues too)."""
    return multiprocessing.get_context(start_method())


def started(target, *args, ctx=None) -> multiprocessing.Process:
    """target(*args) in a child process, started; join() it, or kill it by its .pid."""
    proc = (ctx or context()).Process(target=target, args=args, daemon=True)
    proc.start()
    return proc
