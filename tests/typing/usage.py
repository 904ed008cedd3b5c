"""A typed user of fastgrad: CI checks it with `mypy --strict` against the installed wheel (.ci/release).

It uses what a user writes (Var and its operators, the functions, the transforms, nn, optim, fg.compile), so a
stub or an annotation that is wrong or missing shows up as a type error here. It is also an ordinary program:
`python tests/typing/usage.py` runs it.
"""
from __future__ import annotations

import math

import fastgrad as fg
from fastgrad import nn, optim


def polynomial(a: fg.Var, x: fg.Var, b: float) -> fg.Var:
    """(a * x + b) ** 2 + sin(x): operators with Vars and numbers on either side."""
    return (a * x + b) ** 2 + fg.sin(x) - 1.0 / (1.0 + x.exp())


def derivatives() -> tuple[float, float]:
    a, x = fg.Var(1.0), fg.Var(2.0)
    y = polynomial(a, x, 3.0)
    y.backward()
    slope: float = x.grad
    dsin = fg.grad(lambda t: fg.sin(t) * t)(2.0)
    assert math.isclose(float(dsin), math.sin(2.0) + 2.0 * math.cos(2.0))
    return y.data, slope


def fused() -> float:
    w = [fg.Var(0.5), fg.Var(-1.0)]
    z = fg.tanh(fg.dot(w, [1.0, 2.0])) + fg.sum(w)
    z.backward()
    return sum(wi.grad for wi in w)


def train(steps: int = 3) -> list[float]:
    model = nn.MLP(2, [4, 1])
    params: list[fg.Var] = model.parameters()
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    points = [((0.0, 1.0), 1.0), ((1.0, 0.0), -1.0)]
    losses: list[float] = []
    for _ in range(steps):
        opt.zero_grad()
        total = fg.Var(0.0)
        for (x0, x1), label in points:
            score: fg.Var = model([x0, x1])
            total = total + (1.0 - label * score).relu()
        total.backward()
        opt.step()
        losses.append(total.data)
    return losses


def compiled_loss() -> float:
    w = fg.Var(0.3)

    def loss(x: float) -> fg.Var:
        return (w * x - 1.0) ** 2

    step = fg.compile(loss)
    out: fg.Var = step(2.0)
    return out.data


if __name__ == "__main__":
    print(derivatives(), fused(), train(), compiled_loss())
