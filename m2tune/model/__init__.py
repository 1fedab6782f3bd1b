"""The performance model: a GPU's hardware profile (hardware.py, written by calibrate.py), the
predicted time of a config (perfmodel.py, from the kernel's spec), fitting helpers and the model's
agreement with measurements (modelcheck.py). Nothing here needs a GPU but calibrate's measuring.
"""
