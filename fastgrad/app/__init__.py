"""The application around the library: the `fastgrad` command (`python -m fastgrad demo | bench`).

- `cli`: the command line; `demo`: the two-moons training demo; `bench`: the benchmark tables;
- `backends`: the same training step on every engine (fastgrad, the pure-Python reference, micrograd, torch),
  the one home of the comparisons; `workloads`: the engine benchmarks (graphs, chains, memory).

Nothing in the library (`fastgrad`, `fastgrad.nn`, `fastgrad.optim`, transforms, inspection) imports it.
"""
