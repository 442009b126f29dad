"""Exceptions raised by govshare.

Every error is a :class:`GovshareError`; the subclasses say what kind of problem it is and
carry the same message as the Rust engine. Wrong argument types raise the built-in
``TypeError`` and malformed argument values (bad JSON, an unknown role) ``ValueError``.
"""

from govshare._internal import (
    AccessDenied,
    GovshareError,
    IntegrityError,
    InvalidInput,
    Locked,
    NotFound,
    Rejected,
)

__all__ = [
    "AccessDenied",
    "GovshareError",
    "IntegrityError",
    "InvalidInput",
    "Locked",
    "NotFound",
    "Rejected",
]
