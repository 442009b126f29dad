"""Exceptions raised by govshare.

Every error is a :class:`GovshareError`; the subclasses say what kind of problem it is and
carry the same message as the Rust engine. The class is derived from the engine's stable error
code (``_internal.ERROR_CLASSES`` maps each code to its class; the C status has the same
number). :class:`QueryFailed` is an :class:`InvalidInput`: the query itself failed as it ran. Wrong argument types raise the built-in
``TypeError`` and malformed argument values (bad JSON, an unknown role) ``ValueError``.
"""

from govshare._internal import (
    AccessDenied,
    GovshareError,
    IntegrityError,
    InternalError,
    InvalidInput,
    LimitExceeded,
    Locked,
    NotFound,
    QueryFailed,
    Rejected,
    StorageError,
)

__all__ = [
    "AccessDenied",
    "GovshareError",
    "IntegrityError",
    "InternalError",
    "InvalidInput",
    "LimitExceeded",
    "Locked",
    "NotFound",
    "QueryFailed",
    "Rejected",
    "StorageError",
]
