"""Which checkpoints a retention policy removes. Pure: steps in, steps out."""

from __future__ import annotations


def steps_to_remove(valid_steps: list[int], keep_last: int | None, keep_every: int | None) -> list[int]:
    """Valid steps that fall outside the policy, oldest first.

    - ``keep_last`` N: the N newest valid checkpoints stay.
    - ``keep_every`` K: every step that is a multiple of K also stays.
    - neither: nothing is removed; only ``keep_every``: the newest stays plus the multiples.
    - the newest valid checkpoint always stays, whatever the numbers say.
    Invalid (torn, corrupt) checkpoints are never passed in: they are never removed automatically.
    """
    if not valid_steps or (keep_last is None and keep_every is None):
        return []
    ordered = sorted(set(valid_steps))
    keep = set(ordered[-(keep_last or 1) :])
    if keep_every:
        keep |= {s for s in ordered if s % keep_every == 0}
    keep.add(ordered[-1])
    return [s for s in ordered if s not in keep]
