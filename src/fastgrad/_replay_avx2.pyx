"""fastgrad._replay compiled with -mavx2: the same kernels and results, wider vectors (fg.vmap's
batched replay uses it when the CPU has AVX2)."""

include "_replay_impl.pxi"
