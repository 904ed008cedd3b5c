"""Replaying a recorded tape (fg.compile): forward and reverse sweeps over compact arrays, no Python per node.

A tape (made by ``_engine.record``) is a function of its inputs: positions ``0 .. nargs-1`` are the
arguments, ``nargs .. nin-1`` the external nodes (made before the trace, read from the arena on every
replay), then the body in creation order. The sweeps repeat exactly what eager mode computes, in the same
order, with the same op-table functions: every value and every gradient is bit-identical to building the
graph again and calling ``backward()``:

- values: ``op_value`` per node; ``sum`` and ``dot`` add from 0.0 in operand order, as ``fg.sum``/``fg.dot``;
- adjoints: a body node's adjoint starts at -0.0, the identity of IEEE addition (eager mode sets it at its
  first contribution: the same bits); an external leaf's adjoint starts at its current ``.grad``, so its
  contributions are added to it one by one, in eager mode's order, and the sum is written back;
- an external node that is not a leaf (computed outside the function) gets its adjoint as a backward seed
  (eager mode would carry on through it in the same pass: the same terms, possibly summed in another order).
"""

# The kernels live in _replay_impl.pxi, shared with _replay_avx2 (the same code compiled with -mavx2).
include "_replay_impl.pxi"
