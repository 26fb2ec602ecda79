"""Independent jobs of an experiment, run side by side in spawned single-threaded processes.

Small models train faster per core in separate single-threaded processes than in one process
with two threads (their matrices are too small to split well between threads), so an experiment
whose runs are independent hands them to :func:`run_jobs`. A job must be a pure function of its
arguments (every random draw seeded by them), so its result does not depend on which worker
runs it or in what order; the results come back in the jobs' order. Job functions must be
importable at module level (they are pickled by name into the workers).

>>> run_jobs([Job(pow, (2, 10)), Job(pow, (3, 2))], workers=1)
[1024, 9]
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Job", "run_jobs"]


@dataclass(frozen=True)
class Job:
    """One unit of work: ``fn(*args)``.

    ``cost`` is a relative estimate of its run time (the longest jobs start first, so the last
    one to finish is short); ``label`` names it in the progress lines.
    """

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    cost: float = 1.0
    label: str = ""


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def run_jobs(
    jobs: Sequence[Job],
    workers: int,
    log: Callable[[str], None] | None = None,
    threads: int = 1,
    describe: Callable[[Job, Any], str] | None = None,
) -> list[Any]:
    """Run every job; return their results in the order of ``jobs``.

    Parameters
    ----------
    jobs : what to run
    workers : processes side by side; 1 runs the jobs here, in order, with this process's
        torch threads (no process is spawned)
    log : receives one line per finished job (``describe(job, result)``, default its label)
        with the number done and the seconds since the start
    threads : torch intra-op threads in each worker process

    A job that raises stops the run: the error is raised here once the running jobs end.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    started = time.perf_counter()
    results: list[Any] = [None] * len(jobs)

    def report(done: int, job: Job, result: Any) -> None:
        if log is not None:
            what = describe(job, result) if describe is not None else job.label or getattr(job.fn, "__name__", "job")
            log(f"({done}/{len(jobs)}) {what}; {time.perf_counter() - started:.0f} s in all")

    if workers == 1:
        for index, job in enumerate(jobs):
            results[index] = job.fn(*job.args)
            report(index + 1, job, results[index])
        return results
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i].cost)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(threads,)
    ) as pool:
        futures = {pool.submit(jobs[i].fn, *jobs[i].args): i for i in order}
        for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
            index = futures[future]
            results[index] = future.result()
            report(done, jobs[index], results[index])
    return results
