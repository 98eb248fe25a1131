"""Samplers and a resumable loader that make training exact under DDP and after a mid-epoch resume.

- :class:`ResumableDistributedSampler` (training): a permutation fixed by ``(seed, epoch)``, sharded over the
  ranks by interleaving (rank ``r`` takes positions ``r, r + W, r + 2W, …``), so with a per-rank batch of
  ``b`` the ``k``-th global batch of ``W`` ranks holds exactly the pairs of the ``k``-th batch of one process
  with batch ``W·b``. Like :class:`~torch.utils.data.DistributedSampler` it pads the permutation with its first
  pairs when the training set is not a multiple of ``W`` (every rank must run the same number of steps); only
  then does a DDP epoch differ from the single-process one.
- :class:`ResumableDataLoader` (training): counts the batches it has handed out in the current epoch and
  exposes ``state_dict``/``load_state_dict``. Lightning stores the state of such a loader in its checkpoints
  (``loops.fit_loop.state_dict.combined_loader``) and restores it on resume, so a run killed in the middle of
  an epoch continues at the next unseen batch instead of restarting the epoch.
- Evaluation under DDP uses Lightning's
  :class:`~lightning.pytorch.overrides.distributed.UnrepeatedDistributedSampler`: uneven shards, no repeated
  pairs, so the summed metrics count every pair exactly once (see :func:`eval_sampler`).

Lightning does not pre-fetch from a loader whose length is known, so the number of batches the loader has
handed out when a checkpoint is written equals the number of training steps taken in the epoch; the loader
counts batches (not sampler indices), which stays right with worker processes that pre-fetch indices.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, DistributedSampler, Sampler


class ResumableDistributedSampler(DistributedSampler):
    """Seeded, sharded, padded training sampler that can start an epoch part of the way through.

    Subclassing :class:`~torch.utils.data.DistributedSampler` keeps Lightning from replacing it with its own
    sampler under DDP. The order depends only on ``(seed, epoch)`` (``torch.randperm`` with a generator
    seeded ``seed + epoch``), never on the global RNG.

    Args:
        dataset: the training dataset (only its length is used).
        num_replicas: world size.
        rank: this process's global rank.
        shuffle: shuffle each epoch (``False``: split order).
        seed: seed of the permutation.
    """

    def __init__(self, dataset: Sized, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self._resume: tuple[int, int] | None = None

    def resume_at(self, epoch: int, skip: int) -> None:
        """The next iteration over ``epoch`` starts after its first ``skip`` indices of this rank."""
        self.epoch = int(epoch)
        self._resume = (int(epoch), int(skip))

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        resume, self._resume = self._resume, None
        if resume is not None and resume[0] == self.epoch:
            indices = indices[resume[1] :]
        return iter(indices)


class ResumableDataLoader(DataLoader):
    """A training :class:`~torch.utils.data.DataLoader` whose position in the epoch is saved and restored.

    Its sampler must be a :class:`ResumableDistributedSampler`. :meth:`state_dict` gives ``{"epoch", "batches"}``:
    the sampler's epoch and how many batches of it were handed out; :meth:`load_state_dict` makes the next
    iteration skip those batches (or start the next epoch when the saved one was complete).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, ResumableDistributedSampler):
            raise TypeError("ResumableDataLoader needs a ResumableDistributedSampler as its sampler")
        self._epoch = 0
        self._batches = 0

    def __iter__(self) -> Iterator[Any]:
        inner = super().__iter__()
        sampler: ResumableDistributedSampler = self.sampler  # type: ignore[assignment]
        pending = sampler._resume

        def counted() -> Iterator[Any]:
            first = True
            for batch in inner:
                if first:  # the sampler has started (lazily): record where this epoch began
                    start = pending[1] if pending is not None and pending[0] == sampler.epoch else 0
                    self._epoch, self._batches, first = sampler.epoch, start // max(self.batch_size or 1, 1), False
                self._batches += 1
                yield batch

        return counted()

    def state_dict(self) -> dict[str, int]:
        """The epoch and the number of its batches handed out so far (plain ints: ``weights_only``-safe)."""
        return {"epoch": int(self._epoch), "batches": int(self._batches)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Makes the next iteration continue after ``state["batches"]`` batches of ``state["epoch"]``."""
        epoch, batches = int(state["epoch"]), int(state["batches"])
        sampler: ResumableDistributedSampler = self.sampler  # type: ignore[assignment]
        if batches >= len(self):
            epoch, batches = epoch + 1, 0
        sampler.resume_at(epoch, batches * int(self.batch_size or 1))
        self._epoch, self._batches = epoch, batches


def eval_sampler(dataset: Sized, num_replicas: int, rank: int) -> Sampler | None:
    """The evaluation sampler: ``None`` (split order) in one process, an unrepeated shard under DDP."""
    if num_replicas <= 1:
        return None
    return UnrepeatedDistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
