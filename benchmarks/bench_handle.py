"""Why Var is a Cython extension type: its per-op cost against a Python __slots__ handle class.

DESIGN asks that the handle type be measured, not guessed. Both variants drive the same compiled engine;
only the operator slot differs. Prints ns/op above a bare Python float loop, from one run (best of 5).

    python benchmarks/bench_handle.py
"""
import time

import fastgrad as fg


class SlotVar:
    """A Python handle with __slots__ whose operator calls into the compiled engine."""
    __slots__ = ("v",)

    def __mul__(self, other):
        r = SlotVar.__new__(SlotVar)
        r.v = self.v * (other.v if type(other) is SlotVar else other)
        return r


class SubVar(fg.Var):
    """A Python subclass of the extension type with __slots__ = ()."""
    __slots__ = ()


def _best(fn, n=10 ** 6, repeats=5):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - t)
    return best * 1e9 / n


def _floats(n):
    z, c = 1.0, 1.0000001
    for _ in range(n):
        z = z * c


def _extension(n):
    z, c = fg.Var(1.0), fg.Var(1.0000001)
    for _ in range(n):
        z = z * c


def _slots(n):
    z, c = SlotVar(), SlotVar()
    z.v, c.v = fg.Var(1.0), fg.Var(1.0000001)
    for _ in range(n):
        z = z * c


def _subclass(n):
    z, c = SubVar(1.0), SubVar(1.0000001)
    for _ in range(n):
        z = z * c


def main():
    base = _best(_floats)
    print("| handle | ns/op | ns/op above a bare float loop |")
    print("|---|---:|---:|")
    for name, fn in (("Cython extension type (fastgrad.Var)", _extension),
                     ("Python class with __slots__ over it", _slots),
                     ("Python subclass, __slots__ = ()", _subclass)):
        t = _best(fn)
        print(f"| {name} | {t:.1f} | {t - base:.1f} |")


if __name__ == "__main__":
    main()
