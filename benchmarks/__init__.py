"""Benchmarks of Socket_Singleton, side by side with the 2.0.0 release.

Run from the repository root: ``python -m benchmarks --quick`` (under a minute), or the full
run against 2.0.0 installed in a virtual environment the benchmark creates:
``python -m benchmarks --make-baseline /tmp/ss-baseline``. ``--help`` lists the options.

Benchmarks are not tests: they report speed and assert nothing.
"""
