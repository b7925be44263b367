"""MLflow calls that never stop training: in order, on a thread of their own, each retried with
backoff while the tracking store is unreachable (a server down, SQLite locked).

A :class:`~pipelines.tracking.RunLogger` hands every call to its :class:`CallBuffer` and goes
on. Bounds: a call is retried for :data:`RETRY_SECONDS` at most, then dropped and counted
(``dropped``); :meth:`CallBuffer.flush` waits :data:`FLUSH_SECONDS` at most (a run's end, a
checkpoint). An error that retrying cannot fix (a bad parameter, a run that does not exist) is
not retried: it is counted, logged as a warning and dropped, and the calls after it go on.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from mlflow.exceptions import MlflowException

#: A call retried this long (MLflow down for 10 minutes) is dropped.
RETRY_SECONDS = 600.0
#: How long a flush waits for the calls before it to be made.
FLUSH_SECONDS = 120.0
#: Backoff between attempts: doubling from the first to the last.
FIRST_DELAY, LAST_DELAY = 0.5, 30.0
#: MLflow error codes that say the call itself is wrong: retrying would not help.
PERMANENT = {
    "INVALID_PARAMETER_VALUE",
    "RESOURCE_ALREADY_EXISTS",
    "RESOURCE_DOES_NOT_EXIST",
    "BAD_REQUEST",
    "INVALID_STATE",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
}

_log = logging.getLogger(__name__)


def retryable(error: Exception) -> bool:
    """A store that cannot be reached or is busy: worth another attempt."""
    if isinstance(error, MlflowException):
        return error.error_code not in PERMANENT
    return True  # connection errors, timeouts, "database is locked", OSError


def call_with_retry(fn: Callable[..., Any], *args: Any, seconds: float = RETRY_SECONDS) -> Any:
    """``fn(*args)``, retried with backoff while the error is :func:`retryable`, for ``seconds``
    at most; then the last error is raised."""
    delay, deadline = FIRST_DELAY, time.monotonic() + seconds
    while True:
        try:
            return fn(*args)
        except Exception as error:
            if not retryable(error) or time.monotonic() + delay > deadline:
                raise
            _log.debug("MLflow call failed (%s); again in %.1f s", error, delay)
            time.sleep(delay)
            delay = min(2 * delay, LAST_DELAY)


class CallBuffer:
    """Calls made in order by one daemon thread; see the module docstring."""

    def __init__(self, name: str = "mlflow") -> None:
        self._calls: collections.deque = collections.deque()
        self._changed = threading.Condition()
        self._closed = False
        self.dropped = 0
        """Calls given up: retried :data:`RETRY_SECONDS` in vain, or not retryable."""
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, name=f"{name}-calls", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        with self._changed:
            if self._closed:
                raise RuntimeError("CallBuffer: closed")
            self._calls.append((fn, args))
            self._changed.notify_all()

    def flush(self, timeout: float = FLUSH_SECONDS) -> bool:
        """Wait until every call submitted so far is made (or dropped), ``timeout`` at most;
        True when none is left."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._calls:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def close(self, timeout: float = FLUSH_SECONDS) -> bool:
        """Flush, then stop the thread; True when every call was made or dropped."""
        done = self.flush(timeout)
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        return done

    @property
    def pending(self) -> int:
        return len(self._calls)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._calls and not self._closed:
                    self._changed.wait()
                if not self._calls:
                    return
                fn, args = self._calls[0]
            try:
                call_with_retry(fn, *args)
            except Exception as error:  # noqa: BLE001 - a dropped call must not stop the others
                self.dropped += 1
                self.errors.append(f"{getattr(fn, '__name__', fn)}: {error}"[:500])
                _log.warning("MLflow call %s dropped: %s", getattr(fn, "__name__", fn), error)
            with self._changed:
                self._calls.popleft()
                self._changed.notify_all()
