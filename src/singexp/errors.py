"""User-facing errors: one line, naming the config key and the fix, printed without a traceback."""

from __future__ import annotations


class SingexpError(Exception):
    """An error caused by the user's configuration or data, reported as one line."""


class ConfigError(SingexpError):
    """A configuration value is invalid. The message names the key and how to fix it."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"{key}: {message}")


def missing_file(key: str, path: object) -> ConfigError:
    """``key`` names no file: a folder (then say what is expected) or nothing at all."""
    from pathlib import Path

    if Path(str(path)).is_dir():
        return ConfigError(
            key, f"{str(path)!r} is a folder; give a model file (a .safetensors or .ckpt file)"
        )
    return ConfigError(key, f"no such file {str(path)!r}")
