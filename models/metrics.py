"""Continual-learning metrics over an accuracy matrix.

``R[i][j]`` is the accuracy on task ``j`` at evaluation row ``i`` (``None`` when task ``j`` was
not evaluated then; rows may be shorter than the number of tasks). ``learned_at[j]`` is the index
of the row evaluated right after task ``j`` was learned (``None`` if unknown), ``chance[j]`` the
accuracy of a random guess on task ``j`` (e.g. 1 / its number of classes). Tasks are numbered in
the order they were learned, so the last task is ``T - 1`` with ``T = len(learned_at)``; ``F`` is
the final row.

- ``accuracy_j``: the latest evaluated accuracy of task ``j``; ``average_accuracy`` is their mean.
- ``backward_transfer_j = R[F][j] - R[learned_at[j]][j]`` for ``j < T - 1``: how learning later
  tasks changed task ``j`` (negative means forgetting). Lopez-Paz & Ranzato, 2017.
- ``forward_transfer_j = R[learned_at[j] - 1][j] - chance[j]`` for ``j > 0``: how well task ``j``
  is solved just before it is learned, above chance (CLM hard-coded the baseline to 0; pass
  ``chance``, which defaults to 0 only for want of a better value).
- ``forgetting_j = max(0, max_{learned_at[j] <= r < F} R[r][j] - R[F][j])`` for ``j < T - 1``: the
  drop from the best accuracy task ``j`` ever had since it was learned. Chaudhry et al., 2018.

Each average is over the tasks where its terms exist and is ``None`` when there are none; the
per-task lists hold ``None`` where a term does not exist.
"""

from __future__ import annotations

from collections.abc import Sequence


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def cl_metrics(
    matrix: Sequence[Sequence[float | None]],
    learned_at: Sequence[int | None],
    chance: Sequence[float] | None = None,
) -> dict:
    """Average accuracy, backward and forward transfer and forgetting of an accuracy matrix."""
    tasks = len(learned_at)
    final = len(matrix) - 1
    chance = list(chance) if chance is not None else [0.0] * tasks
    if len(chance) != tasks:
        raise ValueError(f"chance has {len(chance)} entries for {tasks} tasks")
    for j, row in enumerate(learned_at):
        if row is not None and not 0 <= row <= final:
            raise ValueError(f"learned_at[{j}] = {row} is not a row of the matrix")

    def column(task: int) -> list[float | None]:
        return [row[task] if task < len(row) else None for row in matrix]

    accuracy: list[float | None] = []
    backward: list[float | None] = []
    forward: list[float | None] = []
    forgetting: list[float | None] = []
    for j in range(tasks):
        acc = column(j)
        evaluated = [a for a in acc if a is not None]
        accuracy.append(evaluated[-1] if evaluated else None)
        learned, last, old = learned_at[j], (acc[-1] if acc else None), j < tasks - 1
        at_learned = acc[learned] if learned is not None else None
        since = [a for a in acc[learned:final] if a is not None] if learned is not None else []
        before = acc[learned - 1] if learned else None  # no row before row 0
        backward.append(
            last - at_learned if old and last is not None and at_learned is not None else None
        )
        dropped = max(0.0, max(since) - last) if old and since and last is not None else None
        forgetting.append(dropped)
        forward.append(before - chance[j] if j > 0 and before is not None else None)
    return {
        "average_accuracy": _mean(accuracy),
        "backward_transfer": _mean(backward),
        "forward_transfer": _mean(forward),
        "forgetting": _mean(forgetting),
        "accuracy_per_task": accuracy,
        "backward_transfer_per_task": backward,
        "forward_transfer_per_task": forward,
        "forgetting_per_task": forgetting,
    }
