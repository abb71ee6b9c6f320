"""One builder at a time for what parallel jobs share: face model, datasets, caches, trained stages.

The jobs of a parallel sweep (Hydra's joblib or submitit launchers) start together on the same ``data/``
and ``cache/`` folders. Each shared artefact is built under an inter-process lock on a file beside it,
``<parent>/.<name>.lock``: one job builds, the others wait and then find the artefact complete and reuse
it. The lock is the operating system's (``flock``, through the ``filelock`` package), so the kernel
releases it when its holder dies, even by ``kill -9``; what a killed builder leaves is never taken for
complete, because every artefact marks completeness by one file written last, atomically (a manifest,
``meta.json``, the stage's checkpoint), and the next builder clears or overwrites the rest.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)


def lock_file(target: str | os.PathLike) -> Path:
    """``<parent>/.<name>.lock``: beside ``target``, so copying the artefact does not copy its lock."""
    target = Path(target)
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def build_lock(target: str | os.PathLike) -> Iterator[None]:
    """Hold the inter-process lock of ``target`` (a file or folder, existing or not) while building it.

    Blocks while another process holds it, saying so once in the log. Not reentrant: a process must not
    take the same target's lock twice.
    """
    path = lock_file(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("%s: another job is building it; waiting (lock %s)", target, path)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def one_builder_per(argument: str):
    """Decorator: the function runs under :func:`build_lock` of its argument ``argument`` (a path)."""

    def decorate(build):
        signature = inspect.signature(build)

        @functools.wraps(build)
        def locked(*args, **kwargs):
            with build_lock(signature.bind(*args, **kwargs).arguments[argument]):
                return build(*args, **kwargs)

        return locked

    return decorate
