"""Triton kernels, one folder per kernel family (installed as m2tune.kernel_variants).

A family folder holds spec.py (what each kernel is, in plain Python), common.py (the shared
@triton.jit pieces), one file per kernel and naive.py (the plain reference). Code outside reaches
them through m2tune.variants, which imports a kernel file only when it is needed: Triton decides
at that moment whether the kernel runs compiled or in its interpreter.
"""
