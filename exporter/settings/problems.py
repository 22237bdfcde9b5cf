"""What is wrong with a configuration: :class:`ConfigProblem` and :class:`ConfigError`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

# An error lists at most this many problems (a file with the same mistake in every target
# would otherwise print thousands of lines).
MAX_PROBLEMS_SHOWN: Final = 20


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with the configuration: where (a dotted path or a variable) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """The configuration cannot be used. ``str()`` is the full, secret-free explanation."""

    def __init__(self, source: str, problems: Sequence[ConfigProblem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return f"{self.source}: {self.problems[0]}"
        shown = self.problems[:MAX_PROBLEMS_SHOWN]
        details = "".join(f"\n  {problem}" for problem in shown)
        hidden = len(self.problems) - len(shown)
        more = f"\n  ... and {hidden} more" if hidden else ""
        return f"{self.source}: {len(self.problems)} problems:{details}{more}"

    @classmethod
    def single(cls, source: str, message: str, path: str = "") -> ConfigError:
        """An error of one problem."""
        return cls(source, [ConfigProblem(path=path, message=message)])
