"""How many CPU threads torch uses, chosen while the work runs, by timing it.

On a 2-core machine, two OpenMP threads train fastest when nothing else runs, and about ten times
slower beside one CPU-bound process of another session (the kernel's autogroups share the cores
by session, and one spinning thread waits for the other); one thread is slower idle (by up to
half, varying with the machine's state) and keeps most of its speed beside such a process
(README, Threads). No fixed setting is right on both, and a competing process can start or stop
at any time, so :class:`ThreadChooser` times units of work (training steps, decode steps) and
chooses:

1. it measures each thread count in turn, fewest first (``window`` units each, after ``warmup``
   units), and keeps the fastest (least median seconds per unit);
2. it measures the others again ``recheck_s`` seconds later, and at double that interval each
   time the choice holds; at once when the chosen count's units get ``slowdown`` times slower
   than when it was chosen;
3. a probe unit ``abort`` times slower than a count already measured in the same probe ends that
   count's measurement at once, so trying two threads beside a busy process costs one slow unit,
   not a window of them;
4. before a count's first unit of a probe, small matrix products run on it and on the count
   already measured, 20 ms each, three times in turn (:func:`kernel_ratio`): ``gate_ratio``
   times slower per product in any round, and the count is ruled out without a unit
   (:meth:`ThreadChooser.gate`; every check is in ``gates``). Beside a busy process of another
   session two threads ran them 1,500-1,800 times slower than one (idle: 1.0-1.3 times alone,
   2.0-2.8 inside a training notebook), and one slow unit can be most of a stage's budget: a
   GRPO step on two threads there took 74-95 s of its 75 s.

The chooser is pure (it is told the times); :func:`next_threads` runs the kernel check and
applies the count to torch (:func:`use_threads`). Set
``V2LO_THREADS=fixed`` to keep torch's thread count as started (``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class ThreadChooser:
    """Chooses a thread count among ``options`` from timed units of work (seconds per unit;
    a unit may weigh more than one, e.g. a generation batch's decode steps)."""

    options: tuple[int, ...]
    window: int = 5  # units measured per thread count in a probe
    warmup: int = 2  # first units not measured (allocation, caches)
    recheck_s: float = 60.0  # seconds from a choice to the next probe; doubles while it holds
    max_recheck_s: float = 600.0
    slowdown: float = 2.0  # the chosen count this much slower than when chosen: probe again
    abort: float = 3.0  # a probe unit this much slower than the chosen rate ends the probe
    gate_ratio: float = 10.0  # a kernel this much slower on a count rules it out (:meth:`gate`)
    choice: int = 0
    log: list[dict] = field(default_factory=list)  # one entry per decision
    gates: list[dict] = field(default_factory=list)  # one entry per kernel check (:meth:`gate`)

    def __post_init__(self) -> None:
        if not self.options or any(n < 1 for n in self.options):
            raise ValueError(f"thread options must be counts >= 1, not {self.options}")
        self.options = tuple(dict.fromkeys(self.options))
        self.choice = self.choice or self.options[0]
        self._pending = sorted(self.options)  # counts still to measure; fewest threads first
        self._times: dict[int, list[float]] = {n: [] for n in self.options}
        self._seen = 0
        self._rate = 0.0  # seconds per unit of the choice when it was made
        self._recent: list[float] = []
        self._interval = self.recheck_s
        self._next_probe = float("inf")
        self._reason = "start"
        self._gated = False  # the probe ruled a count out by the kernel check

    @property
    def probing(self) -> bool:
        return bool(self._pending)

    def current(self) -> int:
        """The thread count for the next unit."""
        return self._pending[0] if self._pending else self.choice

    def needs_gate(self) -> tuple[int, int] | None:
        """(count, reference): the count about to run its first unit of a probe, and the fastest
        count measured in that probe already, to time the kernel on (:meth:`gate` can then rule
        the count out without a unit); None when there is nothing to compare."""
        if not self._pending or self._times[self._pending[0]]:
            return None
        n = self._pending[0]
        rates = self._medians(without=n)
        return (n, min(rates, key=rates.get)) if rates else None

    def gate(self, n: int, ratio: float, now: float | None = None) -> None:
        """A fixed kernel took ``ratio`` times as long on ``n`` threads as on the fastest count
        measured in this probe. Above ``gate_ratio``, ``n`` leaves the probe as if its unit had
        taken that ratio of the other's time (logged as "gated"); otherwise its units are
        measured. Every check is appended to ``gates``."""
        self.gates.append({"unit": self._seen, "threads": n, "kernel_ratio": round(ratio, 2)})
        if ratio <= self.gate_ratio or not self._pending or self._pending[0] != n:
            return
        self._times[n] = [min(self._medians(without=n).values()) * ratio]
        self._pending.pop(0)
        self._gated = True
        if not self._pending:
            self._decide(time.monotonic() if now is None else now)

    def record(self, seconds: float, units: float = 1.0, now: float | None = None) -> None:
        """Report that the last unit, run with :meth:`current` threads, took ``seconds``."""
        now = time.monotonic() if now is None else now
        self._seen += 1
        if self._seen <= self.warmup or units <= 0 or len(self.options) == 1:
            return
        per_unit, n = seconds / units, self.current()
        if self._pending:
            times = self._times[n]
            times.append(per_unit)
            done = self._medians(without=n).values()
            if len(times) >= self.window or (done and per_unit > self.abort * min(done)):
                self._pending.pop(0)
                if not self._pending:
                    self._decide(now)
            return
        self._recent = [*self._recent[-(self.window - 1) :], per_unit]
        slowed = (
            len(self._recent) == self.window
            and statistics.median(self._recent) > self.slowdown * self._rate
        )
        if slowed or now >= self._next_probe:
            self._times = {k: [] for k in self.options}
            self._times[self.choice] = list(self._recent)
            self._pending = [k for k in self.options if k != self.choice]
            self._recent = []
            self._reason = "slower" if slowed else "recheck"

    def _medians(self, without: int | None = None) -> dict[int, float]:
        """Median seconds per unit of each count measured in this probe (less ``without``)."""
        return {k: statistics.median(t) for k, t in self._times.items() if t and k != without}

    def _decide(self, now: float) -> None:
        rates = self._medians()
        best = min(rates, key=rates.get)
        held = bool(self.log) and best == self.choice
        self._interval = min(2 * self._interval, self.max_recheck_s) if held else self.recheck_s
        self.choice, self._rate, self._recent = best, rates[best], []
        self._next_probe = now + self._interval
        self.log.append(
            {
                "unit": self._seen,
                "why": self._reason,
                "threads": best,
                "seconds_per_unit": {str(n): round(r, 4) for n, r in rates.items()},
                **({"gated": True} if self._gated else {}),
            }
        )
        self._gated = False

    def summary(self) -> dict:
        """The choices made, for a stage's result and the report."""
        return {
            "options": list(self.options),
            "threads": self.choice,
            "choices": self.log,
            "gates": self.gates,
        }


def thread_chooser(device=None, **kwargs) -> ThreadChooser | None:
    """A chooser between torch's thread count and one thread; None when there is no choice: the
    work runs on a GPU (``device``'s type is cuda; without a device, whenever torch sees a GPU),
    torch has one thread already, or ``V2LO_THREADS=fixed``."""
    import torch

    on_gpu = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    n = torch.get_num_threads()
    if on_gpu or n <= 1 or os.environ.get("V2LO_THREADS", "auto") == "fixed":
        return None
    return ThreadChooser((n, 1), **kwargs)


def use_threads(n: int) -> None:
    """Run torch's CPU operations on ``n`` threads from now on (no-op when already so)."""
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def kernel_seconds(n: int, size: int = 64, seconds: float = 0.05) -> float:
    """Seconds per product of two ``size`` x ``size`` float matrices on ``n`` torch threads,
    over products run for about ``seconds`` (the first product may run over: the time is capped,
    not the count, so a stalled thread team costs one product, not a fixed count of them);
    torch's RNG is not touched and its thread count is left at ``n``. Small products, as a small
    model's steps are made of: idle, one and two threads take about the same time per product
    (7-9 us); beside a busy process of another session two threads took about 15 ms
    (README, Threads)."""
    import torch

    use_threads(n)
    a = torch.ones(size, size)
    count, t0 = 0, time.perf_counter()
    while True:
        a @ a
        count += 1
        spent = time.perf_counter() - t0
        if spent >= seconds:
            return spent / count


def kernel_ratio(n: int, ref: int, rounds: int = 3, seconds: float = 0.02) -> float:
    """The largest, over ``rounds`` alternating timings, of :func:`kernel_seconds` on ``n``
    threads over that on ``ref``: a stalling thread team shows in some rounds, not all (beside a
    busy process one 50 ms timing of two threads ran at one thread's speed, the next 1,000 times
    slower), while idle every round is near its ratio."""
    worst = 0.0
    for _ in range(rounds):
        slow = kernel_seconds(n, seconds=seconds)
        worst = max(worst, slow / max(kernel_seconds(ref, seconds=seconds), 1e-9))
    return worst


def next_threads(chooser: ThreadChooser | None) -> None:
    """Before a unit of work: when the chooser is about to try a count for the first time in a
    probe, time the kernel on it and on the count it would replace, and let the chooser rule it
    out (:meth:`ThreadChooser.gate`); then run torch on the chooser's count."""
    if chooser is None:
        return
    if (pair := chooser.needs_gate()) is not None:
        n, ref = pair
        chooser.gate(n, kernel_ratio(n, ref))
    use_threads(chooser.current())


def restore_threads(chooser: ThreadChooser | None) -> None:
    """Give torch back the thread count the chooser started from (its largest option)."""
    if chooser is not None:
        use_threads(max(chooser.options))


@contextmanager
def adaptive_threads(**kwargs) -> Iterator[ThreadChooser | None]:
    """A chooser (:func:`thread_chooser`) for the block's units; torch's thread count is
    restored when the block ends."""
    chooser = thread_chooser(**kwargs)
    try:
        yield chooser
    finally:
        restore_threads(chooser)


class timed:
    """``with timed(chooser, units=k):`` runs the block on the chooser's current thread count
    and records its time; a no-op for ``chooser=None``. ``units`` may be set inside the block."""

    def __init__(self, chooser: ThreadChooser | None, units: float = 1.0) -> None:
        self.chooser, self.units = chooser, units

    def __enter__(self) -> timed:
        next_threads(self.chooser)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, kind, value, tb) -> None:
        if self.chooser is not None and kind is None:
            self.chooser.record(time.perf_counter() - self._t0, self.units)
