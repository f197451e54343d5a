"""Helpers of the Argo coin-flip translation (argo-coinflip-recursive.yaml).

The coin is a seeded random sequence: flip k of seed s is always the same side, so a run (and
the test that runs it) is repeatable, while another seed gives another sequence, as a real
coin would."""

from __future__ import annotations

import random


def flip_coin(seed: int, flip: int) -> str:
    """Flip number `flip` (from 1) of the sequence `seed`: "heads" or "tails"."""
    return "heads" if random.Random(f"{seed}:{flip}").randint(0, 1) == 0 else "tails"
