"""The M²RNN recurrence: spec.py, common.py, fwd.py, bwd.py, naive.py (see the package above).

Nothing is imported here: importing the spec must not pull in Triton or torch.
"""
