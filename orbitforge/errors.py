"""The one error family that the CLI turns into a single actionable line.

Each message says what was expected, what was received and what to try.  Library code raises
these at its public boundaries; the CLI catches `OrbitforgeError` in one place.
"""

from __future__ import annotations


class OrbitforgeError(Exception):
    """Base class: a user-facing failure with an actionable message."""


class InputError(OrbitforgeError, ValueError):
    """The user's input (file, folder, argument) is missing, unreadable or out of range."""


class StageError(OrbitforgeError):
    """A pipeline stage failed; earlier stages' outputs are intact."""
