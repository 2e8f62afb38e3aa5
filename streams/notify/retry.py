"""Retry stage: deliver one notification, backing off exponentially with jitter, within a time budget.

Like Alertmanager's ``RetryStage``, retrying is separate from the
integrations: a channel classifies its failure (:class:`DeliveryError`
``retryable``) and this stage decides when to try again and when to give up.
Time, sleeping and randomness are passed in, so that tests run the policy
without waiting and see exactly the delays it chose.

Backoff
-------
The *n*-th retry (``n = 0, 1, ...``) waits

    ``d_n = min(max_ms, initial_ms * multiplier ** n) * (1 - jitter * U)``,  ``U ~ Uniform[0, 1)``

so the delay is drawn uniformly from ``[(1 - jitter) * c_n, c_n]`` with ``c_n``
the capped exponential. This is the "Full Jitter" family of Marc Brooker's
*Exponential Backoff And Jitter* (AWS Architecture Blog, 2015,
https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/):
``jitter=1.0`` is exactly his Full Jitter (``random_between(0, c_n)``),
``jitter=0.5`` his Equal Jitter, and the default ``0.2`` a milder spread.
Jitter de-synchronises retries: after a receiver outage, every pending
notification would otherwise retry at the same instants and hit it in
bursts. It is the full-jitter family, not the post's "Decorrelated Jitter"
(``min(cap, random_between(base, 3 * previous))``), because there each
delay depends on the previous draw, so neither its bounds per attempt nor
the total time spent can be stated (or tested) up front; here every delay
lies in a known interval. The default keeps delays within 20 % below the
exponential: a notifier has tens of pending deliveries per receiver, not the
thousands of contending clients the post simulates, so predictability of
"the next try is in about a minute" is worth more than the last bit of spread.
Raise ``jitter`` towards 1 for receivers shared by many Driftline instances.

Giving up
---------
A non-retryable error stops at once. A retryable one is retried until the
next attempt would *start* after ``max_elapsed_ms`` from the first (the rule
of ``cenkalti/backoff``'s ``MaxElapsedTime``, which Alertmanager uses): the
stage never sleeps past its budget only to give up on waking. A receiver's
``Retry-After`` hint is honoured -- the wait is at least the hint -- but capped
at ``max_ms``, so that a misconfigured server answering "retry in a day" cannot
park a notification past the policy's budget unnoticed.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from streams.notify.channel import Channel, DeliveryError, Notification

__all__ = ["DeliveryResult", "RetryPolicy", "deliver_with_retry"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to wait between attempts and when to give up.

    Parameters
    ----------
    initial_ms
        Delay before the first retry (before jitter).
    max_ms
        Cap on any one delay, and on a honoured ``Retry-After`` hint.
    multiplier
        Growth of the delay per retry.
    jitter
        Fraction of each delay that is randomised, in [0, 1]: the delay is
        uniform in ``[(1 - jitter) * c, c]``; 1.0 is AWS "Full Jitter".
    max_elapsed_ms
        Give up once the next attempt would start later than this after
        the first one.

    Raises
    ------
    ValueError
        A parameter out of range, naming it.

    Examples
    --------
    >>> import random
    >>> p = RetryPolicy(jitter=0.0)
    >>> [p.delay_ms(n, random.Random(0)) for n in range(9)]
    [500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0, 32000.0, 60000.0, 60000.0]
    """

    initial_ms: float = 500.0
    max_ms: float = 60_000.0
    multiplier: float = 2.0
    jitter: float = 0.2
    max_elapsed_ms: float = 15 * 60_000.0

    def __post_init__(self) -> None:
        if not self.initial_ms > 0:
            raise ValueError(f"initial_ms: must be positive, got {self.initial_ms!r}")
        if not self.max_ms >= self.initial_ms:
            raise ValueError(f"max_ms: must be at least initial_ms ({self.initial_ms}), got {self.max_ms!r}")
        if not self.multiplier >= 1.0:
            raise ValueError(f"multiplier: must be at least 1, got {self.multiplier!r}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter: must be in [0, 1], got {self.jitter!r}")
        if not self.max_elapsed_ms >= 0:
            raise ValueError(f"max_elapsed_ms: must not be negative, got {self.max_elapsed_ms!r}")

    def ceiling_ms(self, retry: int) -> float:
        """The un-jittered delay before retry number ``retry`` (0 for the first): capped exponential."""
        # Compare exponents, not powers: multiplier ** 2000 overflows a float.
        ceiling = self.initial_ms
        for _ in range(retry):
            ceiling *= self.multiplier
            if ceiling >= self.max_ms:
                return self.max_ms
        return min(ceiling, self.max_ms)

    def delay_ms(self, retry: int, rng: random.Random) -> float:
        """The jittered delay before retry number ``retry``: uniform in ``[(1 - jitter) c, c]``."""
        return self.ceiling_ms(retry) * (1.0 - self.jitter * rng.random())


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The outcome of :func:`deliver_with_retry`.

    Attributes
    ----------
    delivered
        Whether the receiver acknowledged the notification.
    attempts
        How many times ``send`` was called.
    reason
        ``delivered``, or why it was given up (the last error's reason,
        prefixed with ``not retryable`` or ``gave up``) -- never a secret.
    last_error
        The last :class:`DeliveryError`, None when delivered.
    """

    delivered: bool
    attempts: int
    reason: str
    last_error: DeliveryError | None = None


def deliver_with_retry(
    channel: Channel,
    n: Notification,
    policy: RetryPolicy,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
    rng: random.Random,
) -> DeliveryResult:
    """Send ``n`` through ``channel``, retrying retryable failures per ``policy``.

    Parameters
    ----------
    channel
        The receiver's integration.
    n
        The notification; the same object (and so the same idempotency key)
        is sent on every attempt.
    policy
        Backoff and budget.
    sleep
        Waits the given seconds (:func:`time.sleep`; tests record instead).
        To abort on shutdown, pass one that raises: the exception propagates.
    clock
        Monotonic seconds (:func:`time.monotonic`), for the elapsed budget.
    rng
        Source of jitter (a seeded :class:`random.Random` in tests).

    Returns
    -------
    DeliveryResult
        Delivered or not, attempts made, and why. An exception other than
        :class:`DeliveryError` from the channel is a bug in it: it is logged
        and reported as a non-retryable failure rather than crashing the
        notifier, which must go on delivering other alerts.

    Examples
    --------
    >>> import random
    >>> class Flaky:
    ...     name, calls = "flaky", 0
    ...     def send(self, n):
    ...         self.calls += 1
    ...         if self.calls < 3:
    ...             raise DeliveryError("HTTP 503", True)
    ...     def close(self): pass
    >>> waits = []
    >>> r = deliver_with_retry(Flaky(), Notification("k", "flaky", {}), RetryPolicy(jitter=0.0), waits.append,
    ...                        lambda: 0.0, random.Random(0))
    >>> r.delivered, r.attempts, waits
    (True, 3, [0.5, 1.0])
    """
    start = clock()
    attempts = 0
    while True:
        attempts += 1
        try:
            channel.send(n)
        except DeliveryError as exc:
            if not exc.retryable:
                return DeliveryResult(False, attempts, f"not retryable: {exc.reason}", exc)
            delay_ms = policy.delay_ms(attempts - 1, rng)
            if exc.retry_after_s is not None:
                delay_ms = max(delay_ms, min(exc.retry_after_s * 1000.0, policy.max_ms))
            elapsed_ms = (clock() - start) * 1000.0
            if elapsed_ms + delay_ms > policy.max_elapsed_ms:
                why = f"gave up after {attempts} attempts in {elapsed_ms / 1000:.1f}s: {exc.reason}"
                return DeliveryResult(False, attempts, why, exc)
            log.info("%s: attempt %d failed (%s); retrying in %.1fs", channel.name, attempts, exc.reason,
                     delay_ms / 1000)
            sleep(delay_ms / 1000.0)
        except Exception as exc:
            log.error("%s: channel raised %s instead of DeliveryError: %s", channel.name, type(exc).__name__,
                      exc)
            error = DeliveryError(f"channel error: {type(exc).__name__}: {exc}", False)
            return DeliveryResult(False, attempts, f"not retryable: {error.reason}", error)
        else:
            return DeliveryResult(True, attempts, "delivered")
