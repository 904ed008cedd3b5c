"""fastgrad._replay compiled with -mavx2: the same kernels and results, wider vectors (imported by
fastgrad.tracing only when the CPU has AVX2)."""

include "_replay_impl.pxi"
