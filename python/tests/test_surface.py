"""The native module and the public package stay in step: every native method is wrapped by
the public API and declared in the type stub."""

import inspect
import pathlib

import govshare
from govshare import _internal

PACKAGE = pathlib.Path(govshare.__file__).parent
SOURCE = (PACKAGE / "__init__.py").read_text(encoding="utf-8")
STUB = (PACKAGE / "_internal.pyi").read_text(encoding="utf-8")

CLASSES = ["RawEngine", "RawSession", "RawStream", "RawBatch"]


def native_names(cls: type) -> list[str]:
    return [n for n in dir(cls) if not n.startswith("_") or n.startswith("__arrow_c_")]


def test_every_native_method_is_wrapped_and_typed():
    for cls_name in CLASSES:
        cls = getattr(_internal, cls_name)
        for name in native_names(cls):
            assert f"def {name}" in STUB, f"{cls_name}.{name} is missing from _internal.pyi"
            if cls_name != "RawBatch":  # batches are consumed by pyarrow, not wrapped
                assert name in SOURCE, f"{cls_name}.{name} has no wrapper in govshare/__init__.py"
    for fn in ["init_store", "write_synthetic"]:
        assert callable(getattr(_internal, fn))
        assert f"def {fn}" in STUB and f"_internal.{fn}" in SOURCE


def test_public_api_is_documented():
    for name in govshare.__all__:
        obj = getattr(govshare, name)
        assert inspect.getdoc(obj), f"govshare.{name} has no docstring"
