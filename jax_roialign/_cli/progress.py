"""Progress of the tools' long work: a tqdm bar with the elapsed time and an estimate of
the time left, on a terminal only (never in a pipe, a log or `--quiet`), and log lines
that print above it."""

from __future__ import annotations

import sys
import threading

from tqdm import tqdm


class Progress:
    """`total` units of work; `advance(n, what)` after each. Lines go through `log`.

    A unit's cost varies (a first call compiles; the pure-JAX reference is slower than
    the kernels), so the estimate is the mean rate over the whole run so far
    (smoothing=0), which settles as the run goes; a ticker redraws the bar twice a
    second so that the elapsed time moves during a long call."""

    def __init__(self, total: int, what: str, quiet: bool = False, file=None, unit="call"):
        self.file = sys.stderr if file is None else file
        self.enabled = not quiet and self.file.isatty()
        self.bar = tqdm(total=total, desc=what, unit=unit, file=self.file, leave=False,
                        smoothing=0, dynamic_ncols=True, disable=not self.enabled,
                        bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                   "{unit}s [{elapsed} elapsed, ~{remaining} left{postfix}]")
        self._stop = threading.Event()
        self._ticker = None
        if self.enabled:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    def _tick(self):
        while not self._stop.wait(0.5):
            self.bar.refresh()

    def doing(self, what: str) -> None:
        """Names the work under way (shown after the bar)."""
        if self.enabled:
            self.bar.set_postfix_str(what, refresh=False)

    @property
    def done(self) -> int:
        """Units advanced so far (0 when the bar is off)."""
        return self.bar.n if self.enabled else 0

    def advance(self, n: int = 1) -> None:
        if self.enabled:
            self.bar.update(n)

    def log(self, line: str, file=None) -> None:
        """Prints `line` (to `file`, default stdout) above the bar."""
        file = sys.stdout if file is None else file
        if self.enabled:
            self.bar.write(line, file=file)
        else:
            print(line, file=file, flush=True)

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
