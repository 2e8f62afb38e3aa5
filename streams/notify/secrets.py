"""Credentials in configuration: resolved once, never printed.

A receiver's credentials (an HMAC key, an SMTP password, a Slack webhook URL,
which is itself a bearer credential) are written in the configuration as a
*reference*:

``env:NAME``
    The value of environment variable ``NAME`` (the usual way under
    Kubernetes or systemd, where secrets are injected as variables).
``file:/path``
    The content of a file, one trailing newline stripped (Docker and
    Kubernetes secret mounts; ``echo secret > file`` adds the newline).
``literal:TEXT`` or any other string
    The string itself. Allowed, for tests and local demos, but discouraged: the
    secret then sits in a file that is usually checked in. A warning (naming
    the field, never the value) is logged. The ``literal:`` prefix is there for
    a secret that happens to start with ``env:`` or ``file:``.

The resolved value is held by :class:`Secret`, whose ``repr`` and ``str`` are
``***``, so that an accidental ``log.info("%s", cfg)``, an f-string, a
dataclass ``repr`` or an exception message cannot leak it; code that needs
the value calls :meth:`Secret.reveal` at the point of use. Errors name the
configuration field and the reference (a variable name or a path), never the
value.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["Secret", "resolve_secret"]

log = logging.getLogger(__name__)

_MASK = "***"


class Secret:
    """A credential whose ``repr`` and ``str`` are ``***``.

    Parameters
    ----------
    value
        The credential. Use :func:`resolve_secret` to build one from a
        configuration reference.

    Notes
    -----
    Equality compares values in constant time (:func:`hmac.compare_digest`), so
    that configuration objects holding secrets compare as expected without a
    timing side channel. Pickling is refused: a pickle is a serialised form
    that might be logged or stored.

    Examples
    --------
    >>> s = Secret("hunter2")
    >>> s, str(s), f"{s}", s.reveal()
    (***, '***', '***', 'hunter2')
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret: expected a str, got {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        """The credential itself; call it where the value is used, never to log it."""
        return self._value

    def __repr__(self) -> str:
        return _MASK

    def __str__(self) -> str:
        return _MASK

    def __format__(self, spec: str) -> str:
        return format(_MASK, spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode("utf-8"), other._value.encode("utf-8"))

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("Secret: refusing to pickle a credential")

    # Immutable: a copy is the same object (and copy.deepcopy of a config must not hit __reduce__).
    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Secret:
        return self


def resolve_secret(ref: object, field: str, env: Mapping[str, str] | None = None) -> Secret:
    """Resolve a configuration reference (``env:NAME``, ``file:/path``, a literal) to a :class:`Secret`.

    Parameters
    ----------
    ref
        The reference as written in the configuration.
    field
        The configuration field, for error messages
        (``notify.receivers.ops.secret``).
    env
        The environment to read ``env:`` references from; :data:`os.environ`
        when None (tests pass their own).

    Returns
    -------
    Secret
        The resolved, non-empty credential.

    Raises
    ------
    ValueError
        The reference is not a string, names an unset or empty variable, or a
        file that cannot be read or is empty. The message names ``field`` and
        the variable or path, never a value.

    Examples
    --------
    >>> resolve_secret("env:HOOK_KEY", "notify.receivers.ops.secret", env={"HOOK_KEY": "k3y"}).reveal()
    'k3y'
    >>> resolve_secret("env:NOPE", "notify.receivers.ops.secret", env={})
    Traceback (most recent call last):
    ...
    ValueError: notify.receivers.ops.secret: environment variable NOPE is not set
    """
    if isinstance(ref, Secret):
        return ref
    if not isinstance(ref, str):
        # Do not echo the value: a number might be a PIN.
        raise ValueError(f"{field}: expected env:NAME, file:/path or a string, got {type(ref).__name__}")
    if ref.startswith("env:"):
        name = ref[4:]
        if not name:
            raise ValueError(f"{field}: env: needs a variable name (env:NAME)")
        source = os.environ if env is None else env
        if name not in source:
            raise ValueError(f"{field}: environment variable {name} is not set")
        value = source[name]
        if not value:
            raise ValueError(f"{field}: environment variable {name} is empty")
        return Secret(value)
    if ref.startswith("file:"):
        path = ref[5:]
        if not path:
            raise ValueError(f"{field}: file: needs a path (file:/path)")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise ValueError(f"{field}: cannot read secret file {path}: {why}") from None
        except UnicodeDecodeError:
            raise ValueError(f"{field}: secret file {path} is not UTF-8 text") from None
        if text.endswith("\n"):
            text = text[:-2] if text.endswith("\r\n") else text[:-1]
        if not text:
            raise ValueError(f"{field}: secret file {path} is empty")
        return Secret(text)
    value = ref[8:] if ref.startswith("literal:") else ref
    if not value:
        raise ValueError(f"{field}: must not be empty")
    log.warning("%s: secret given literally in the configuration; prefer env:NAME or file:/path", field)
    return Secret(value)
