"""Proving a config right and timing it: validation against float64 (validate.py), a config as a
timed callable (launch.py), CUDA-event timing (timing.py), parallel compiling (precompile.py) and
`m2tune bench` (bench.py). Used by the tuner, the calibration and the benchmarks.
"""
