"""argparse with short errors: a typo gets two lines, the problem and the nearest flag or
choice, instead of the whole usage (23 lines for `bsnn convert`) and no hint.

`bsnn convert --tme 4` is reported by `bsnn convert` itself (argparse would hand it to the
top-level parser, whose usage knows nothing of convert's flags).
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence
from typing import Any, NoReturn


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line for the problem and one for the fix; the
    subcommands' parsers are of this class too (argparse makes them of their parent's)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bad_choice: tuple[str, list[str]] | None = None

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        # remember the value and its choices: the error message alone has them only as text
        if action.choices is not None and value not in action.choices:
            self.bad_choice = (str(value), [str(c) for c in action.choices])
        super()._check_value(action, value)

    def parse_known_args(self, args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None,
                         ) -> tuple[argparse.Namespace, list[str]]:
        """As argparse's, but an argument nobody takes is an error of this parser, so a
        subcommand names its own nearest flag."""
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}", self.flag_hint(extras))
        return parsed, extras

    def error(self, message: str, fix: str = "") -> NoReturn:  # type: ignore[override]
        """Exit 2 with the problem and its fix, two lines on stderr."""
        fix = fix or self.choice_hint() or f"`{self.prog} --help` lists what it takes"
        self.exit(2, f"{self.prog}: error: {message}\nfix: {fix}\n")

    def choice_hint(self) -> str:
        """The choice nearest the bad one, or the choices when none is near."""
        if self.bad_choice is None:
            return ""
        value, choices = self.bad_choice
        near = difflib.get_close_matches(value, choices, n=1)
        if near:
            return f"did you mean {near[0]}? (`{self.prog} --help` lists the choices)"
        return f"pass one of: {', '.join(choices)}"

    def flag_hint(self, extras: list[str]) -> str:
        """`did you mean --time?` for each unknown flag that is near one of this parser's."""
        known = [s for a in self._actions for s in a.option_strings]
        unknown = [e.split("=", 1)[0] for e in extras if e.startswith("-")]
        hints = []
        for flag in unknown:
            near = difflib.get_close_matches(flag, known, n=1)
            if near:
                hints.append(f"did you mean {near[0]}" + (f" (for {flag})?" if len(unknown) > 1
                                                         else "?"))
        return "; ".join(hints)
