"""The exception tree of ratelimit.

::

    Exception
     ├── RateLimitExceeded        a call was denied: raised by ``wait()`` timeouts and the decorator
     ├── ValueError
     │    └── ConfigurationError  a bad limit, cost, identifier or option, with the value named
     └── StoreError               the store failed and ``on_error="raise"``; chained from the cause

Every error raised by this package is one of these; a store's own exception (for example
``redis.exceptions.ConnectionError``) only ever appears as the ``__cause__`` of a ``StoreError``.
Each survives ``pickle`` and ``copy.deepcopy`` with its attributes (``decision`` included), so
it can cross a process pool, multiprocessing or a Celery worker; subclasses too, whatever their
constructor takes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ratelimit.decision import Decision

__all__ = ["ConfigurationError", "RateLimitExceeded", "StoreError"]


def _rebuild(cls: type[BaseException], args: tuple[object, ...]) -> BaseException:
    """An instance of ``cls`` with ``args``, built without its constructor (pickle then
    restores its attributes): a constructor's arguments need not be its ``args``."""
    return cls.__new__(cls, *args)


class _Picklable(BaseException):
    """Pickles and deep-copies through :func:`_rebuild` and the instance's ``__dict__``."""

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.args), self.__dict__)


class RateLimitExceeded(_Picklable, Exception):
    """A call was denied: raised by ``wait`` past its timeout, by ``with limiter.acquire(key)``
    when denied and by :func:`~ratelimit.rate_limit`; each web integration's ``RateLimited``
    is a subclass.

    :param decision: the denying :class:`Decision`, kept as ``decision``.
    :param message: the exception's text; by default it names the limit, the binding policy
        and the retry time.
    """

    def __init__(self, decision: Decision, message: str | None = None) -> None:
        self.decision = decision
        if message is None:
            message = (
                f"rate limit exceeded ({decision.limit} per policy {decision.policy!r}); "
                f"retry after {decision.retry_after:.3f}s"
            )
        super().__init__(message)

    @property
    def retry_after(self) -> float:
        """Seconds until the same cost would be allowed: ``decision.retry_after``."""
        return self.decision.retry_after


class ConfigurationError(_Picklable, ValueError):
    """A bad limit, cost, key or option. The message names the offending value."""


class StoreError(_Picklable, Exception):
    """The store could not answer (connection refused, timeout, server error).

    Raised only where the limiter's ``on_error`` is ``"raise"``; the store client's own exception is
    chained as ``__cause__``. ``outage`` is False when the store answered but could not run this
    one check (a Redis Cluster slot being migrated): the circuit breaker is then not opened.
    """

    outage: bool = True
