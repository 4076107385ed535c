"""Error types that map onto the CLI exit codes of the artifact contract.

`BadInput` (and its subclasses) means bad usage, config or input: exit 2, nothing written.
`RunFailed` means the run itself failed: exit 1, the partial directory stays for resume.
"""

from __future__ import annotations


class LLMForgeError(Exception):
    """Base class; `exit_code` tells the CLI what to return."""

    exit_code = 1


class BadInput(LLMForgeError):
    """Bad usage, config or input. The message names the field, file and line."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


class ConfigError(BadInput):
    """A config key is unknown, has the wrong type or an impossible value."""

    def __init__(self, key: str, message: str, *, path: str | None = None, line: int | None = None):
        super().__init__(f"config key '{key}': {message}", path=path, line=line)
        self.key = key


class RunFailed(LLMForgeError):
    """The run failed after work started; the partial directory is kept for resume."""

    exit_code = 1
