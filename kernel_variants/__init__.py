"""Triton kernel templates for M²RNN, one per file. Import them through m2tune.variants."""
