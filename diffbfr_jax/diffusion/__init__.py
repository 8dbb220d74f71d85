"""Pure diffusion math: schedules, the forward process, losses and jitted reverse chains.

Functions of arrays and a `model_fn(x_t, time, cond)`; nothing here knows which network it calls.
Index convention: a schedule index `i` (0-based, as guided-diffusion) is the paper's step
`t = i + 1`; `gammas[i]` is the paper's gamma_t = prod_{s <= t} alpha_s.
"""
