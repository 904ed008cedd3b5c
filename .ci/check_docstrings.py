"""List the public names of the installed fastgrad without a docstring (the API reference is made of them).

    python .ci/check_docstrings.py [--strict]

Public names: what `__all__` lists in fastgrad, fastgrad.nn, fastgrad.nn.functional, fastgrad.optim and
fastgrad.optim.lr_scheduler, and the public methods and properties those classes define themselves (a class's
docstring covers its constructor). Prints each name without a docstring; with --strict, any such name fails.
"""
from __future__ import annotations

import importlib
import inspect
import sys

MODULES = ["fastgrad", "fastgrad.nn", "fastgrad.nn.functional", "fastgrad.optim",
           "fastgrad.optim.lr_scheduler"]


def public_names() -> list[tuple[str, object]]:
    """(qualified name, object) for every public function, class, method and property, each object once."""
    seen: set[int] = set()
    names = []
    for modname in MODULES:
        module = importlib.import_module(modname)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj) or id(obj) in seen:
                continue
            seen.add(id(obj))
            names.append((f"{modname}.{name}", obj))
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if attr.startswith("_"):
                        continue
                    if isinstance(member, (staticmethod, classmethod)):
                        member = member.__func__
                    if callable(member) or isinstance(member, property) or inspect.isdatadescriptor(member):
                        names.append((f"{modname}.{name}.{attr}", member))
    return names


def main(argv: list[str]) -> int:
    names = public_names()
    missing = [name for name, obj in names if not (inspect.getdoc(obj) or "").strip()]
    for name in missing:
        print(f"check_docstrings: no docstring: {name}")
    print(f"check_docstrings: {len(names) - len(missing)} of {len(names)} public names have a docstring")
    return 1 if missing and "--strict" in argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
