"""Errors that describe bad input: their message names the option and what it accepts.

Kept in a module of its own so that the lowest layers (a form's options, the module's option checks) raise the
same type the CLI prints without a traceback (:data:`lightning_split.cli.USER_ERRORS`).
"""

from __future__ import annotations


class OptionError(ValueError):
    """An option has a value it cannot take; the message names the option and what it accepts."""
