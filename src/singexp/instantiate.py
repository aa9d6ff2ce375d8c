"""Instantiating ``_target_`` nodes (third-party groups: trainer, logger, callbacks, data)."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate

from singexp.errors import SingexpError


def build(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that lets singexp's one-line errors through unwrapped."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        while cause is not None and not isinstance(cause, SingexpError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise
