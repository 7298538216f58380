"""Rich progress bars for long work, quiet when output is not a terminal or progress is turned off."""

from __future__ import annotations

import contextlib
import os
import sys

# The rich Progress on screen, if any: rich allows one live display at a time, so work that starts while one
# is shown (a generation inside a training step) adds its bar to it instead of opening another.
_LIVE: list = []


@contextlib.contextmanager
def progress_bar(description: str, total: int | None, enabled: bool = True):
    """Yield an ``advance(n)`` callable; draws a bar on a terminal unless ``STILLROOM_NO_PROGRESS`` is set."""
    show = enabled and sys.stderr.isatty() and not os.environ.get("STILLROOM_NO_PROGRESS")
    if not show:
        yield lambda n=1: None
        return
    if _LIVE:
        bar = _LIVE[-1]
        task = bar.add_task(description, total=total, loss="")
        try:
            yield lambda n=1: bar.advance(task, n)
        finally:
            bar.remove_task(task)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), transient=True) as bar:
        _LIVE.append(bar)
        try:
            task = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task, n)
        finally:
            _LIVE.remove(bar)


class TrainingProgress:
    """Progress of one training stage: steps, loss and ETA. A rich bar on a terminal; otherwise one line to
    stderr at every 10% of the steps or every 30 s, whichever comes first (so logs of long runs stay short).
    ``STILLROOM_NO_PROGRESS`` turns both off."""

    def __init__(self, description: str, total: int, *, start: int = 0, every_seconds: float = 30.0):
        import time

        self.description = description
        self.total = max(1, int(total))
        self.start_step = start
        self.step = start
        self.loss: float | None = None
        self.every_seconds = every_seconds
        self.started = self.last_line = time.monotonic()
        self.next_fraction = (start * 10 // self.total + 1) / 10
        self.quiet = bool(os.environ.get("STILLROOM_NO_PROGRESS"))
        self.bar = None
        self.own_bar = False
        if not self.quiet and sys.stderr.isatty():
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            if _LIVE:
                self.bar = _LIVE[-1]
            else:
                self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                    transient=True)
                self.bar.start()
                self.own_bar = True
                _LIVE.append(self.bar)
            self.task = self.bar.add_task(description, total=self.total, completed=start, loss="loss -")

    def eta(self, now: float) -> float | None:
        done = self.step - self.start_step
        return (now - self.started) / done * (self.total - self.step) if done > 0 else None

    def update(self, step: int, loss: float | None = None) -> None:
        import time

        self.step = step
        if loss is not None:
            self.loss = float(loss)
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=step,
                            loss=f"loss {self.loss:.4f}" if self.loss is not None else "loss -")
            return
        now = time.monotonic()
        if step / self.total >= self.next_fraction or now - self.last_line >= self.every_seconds:
            while step / self.total >= self.next_fraction:
                self.next_fraction += 0.1
            self.last_line = now
            eta = self.eta(now)
            loss_text = f", loss {self.loss:.4f}" if self.loss is not None else ""
            eta_text = f", ETA {eta:.0f} s" if eta is not None else ""
            print(f"[{self.description}] step {step}/{self.total}{loss_text}{eta_text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            if self.own_bar:
                self.bar.stop()
                _LIVE.remove(self.bar)
            else:
                self.bar.remove_task(self.task)
            self.bar = None
