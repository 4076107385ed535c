"""Evaluation: validation loss and bits-per-byte, generative tasks with verifiers and pass@k,
long-context probes, decontamination through lineage, the lm-eval bridge, and reports.

The eval stage (stages/eval.py) wires these modules together; each is usable on its own.
"""
