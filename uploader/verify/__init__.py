"""``uploader verify``: prove a load landed by reading the profiles back from Target.

    journal + input ──expected.py──> store.py (expected values, folded)
                                        │ pick: all | seeded sample | ids file
                                        v
                     fetch.py (limiter, retry, rate cap) ──compare.py──> store.py (results)
                                                                            │
                       outputs.py: verify.csv, verify-failed.csv, report.json "verify", summary

``command.py`` wires the stages in that order.
"""

from __future__ import annotations

from uploader.verify.command import (
    VerifyOptions,
    VerifyOutcome,
    add_arguments,
    main,
    run_verify,
)

__all__ = ["VerifyOptions", "VerifyOutcome", "add_arguments", "main", "run_verify"]
