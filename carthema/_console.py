"""The rich consoles every command prints to: one for results (stdout), one for errors
and warnings (stderr)."""

from __future__ import annotations

import sys

from rich.console import Console

#: Results. 120 columns wide when output goes to a file or pipe (rich would fall back to
#: 80 and truncate table columns), the terminal's width otherwise.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
#: Errors and warnings (one line each; never wrapped).
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def stdout_console() -> Console:
    """The shared results console (kept for modules that ask for it)."""
    return console


# ---------------------------------------------------------------------------------------
# Progress of long steps
# ---------------------------------------------------------------------------------------
#: Seconds between progress lines of a long step when stderr is not a terminal.
HEARTBEAT_S = 10.0
#: A step shorter than this says nothing (so that a refusal stays one line on stderr).
GRACE_S = 1.0
#: ``carthema --quiet``: no progress lines. ``carthema --verbose``: every step says it
#: starts and ends, however short, and progress lines every :data:`HEARTBEAT_S` seconds
#: come on a terminal too (beside the samplers' bars).
QUIET = False
VERBOSE = False


def interactive() -> bool:
    """Whether a person is watching: stderr is a terminal, or this runs in IPython or
    Jupyter. The API shows progress by default then."""
    if sys.stderr.isatty():
        return True
    try:  # IPython / Jupyter define get_ipython in builtins
        return __import__("builtins").__dict__.get("get_ipython") is not None
    except Exception:  # noqa: BLE001
        return False


def progress_to_stderr(msg: str) -> None:
    """Print a progress line on stderr (stdout keeps the results); nothing with
    ``--quiet``."""
    if not QUIET:
        err_console.print(msg, markup=False, style="dim")


class Step:
    """A long step that reports on itself: a line once it has run :data:`GRACE_S`
    seconds (a quick step, or one refused at once, says nothing), then, while it runs, a
    line every :data:`HEARTBEAT_S` seconds with the elapsed time and, once
    :meth:`update` has counted some of the work, an estimate of the time left from the
    rate so far (no estimate is guessed before that), and a line when it ends.

    Use ``with Step(say, "sampling 4 chains") as s: ... s.update(done, total)``; ``say``
    None: silent. The periodic lines come from a daemon thread, so a step whose work
    cannot report (a compile, a sampler) still shows that it is alive."""

    def __init__(
        self, say, label: str, *, interval: float = HEARTBEAT_S, grace: float = GRACE_S
    ) -> None:
        import threading

        self.say = say
        self.label = label
        self.interval = interval
        self.grace = 0.0 if VERBOSE else grace
        self.started = False
        self.done = 0
        self.total: int | None = None
        self._stop = threading.Event()
        self._thread = None
        self._t0 = 0.0

    def elapsed(self) -> float:
        import time

        return time.perf_counter() - self._t0

    def line(self) -> str:
        """The progress line now: label, counts, elapsed, estimate."""
        el = self.elapsed()
        text = f"{self.label}: {_dur(el)} elapsed"
        if self.total:
            text = f"{self.label}: {self.done}/{self.total}, {_dur(el)} elapsed"
            if 0 < self.done < self.total:
                text += f", about {_dur(el / self.done * (self.total - self.done))} left"
        return text

    def update(self, done: int, total: int | None = None) -> None:
        """``done`` of ``total`` units of work finished."""
        self.done = int(done)
        if total is not None:
            self.total = int(total)

    def _beat(self) -> None:
        if not self.started:
            if self._stop.wait(self.grace):
                return  # done (or failed) quickly: nothing to report
            self.started = True
            self.say(self.label)
        # On a terminal the samplers draw their own bars; a log or pipe gets lines.
        if sys.stderr.isatty() and not VERBOSE:
            return
        while not self._stop.wait(self.interval):
            self.say(self.line())

    def __enter__(self) -> Step:
        import threading
        import time

        self._t0 = time.perf_counter()
        if self.say is not None and self.grace <= 0.0:
            # No grace (--verbose): the start line now, not from the thread, so that a
            # step that ends at once still says it started and ended.
            self.started = True
            self.say(self.label)
        if self.say is not None:
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self.started and exc[0] is None:
            self.say(f"{self.label}: done in {_dur(self.elapsed())}")


def _dur(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s} s" if s < 120 else f"{s // 60} min {s % 60:02d} s"
