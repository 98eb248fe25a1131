"""The Lightning data module of polarity pairs: read, validate, split, tokenise, batch."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from lightning_split.backbone import load_tokenizer
from lightning_split.data.answers import answer_classes, class_id
from lightning_split.data.axbench import PENDING, complete_splits, pending_splits, read_resolved
from lightning_split.data.axbench_negatives import NegativeSettings, ReplyCache, negatives_cache_dir
from lightning_split.data.batch import PairBatch
from lightning_split.data.pairs import BadRowError, DataFileError, PolarityPair
from lightning_split.data.readers import read_pairs
from lightning_split.data.registry import SPLIT_FILE_OPTIONS, ResolvedDataset, resolve_dataset, resolve_split_files
from lightning_split.data.samplers import ResumableDataLoader, ResumableDistributedSampler, eval_sampler
from lightning_split.data.splits import SPLIT_NAMES, Splits, split_dataset
from lightning_split.data.tokenize import PairTokenizer, TokenizedPair
from lightning_split.errors import OptionError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SkippedRow:
    """A row left out because ``skip_bad_rows`` was set.

    Attributes:
        source: the file.
        line: the 1-based line (or parquet row).
        reason: what was wrong.
    """

    source: str
    line: int
    reason: str


def pad_right(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pads token lists to the longest one.

    Args:
        seqs: token id lists.
        pad_id: the padding id.

    Returns:
        ``ids [B, T]`` (long) and ``mask [B, T]`` (long, 1 for real tokens, 0 for padding).
    """
    width = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


class PairDataset(Dataset):
    """Tokenised pairs of one split; item ``i`` carries ``index = i``.

    Args:
        items: the tokenised pairs, in split order.
    """

    def __init__(self, items: list[TokenizedPair]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, TokenizedPair]:
        return i, self.items[i]


class PairCollator:
    """Collates ``(index, TokenizedPair)`` items into a right-padded :class:`PairBatch`.

    Args:
        pad_id: the padding id (the tokenizer's pad token, else its EOS).
    """

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[tuple[int, TokenizedPair]]) -> PairBatch:
        prompt_ids, prompt_mask = pad_right([it.prompt_ids for _, it in items], self.pad_id)
        pos_ids, pos_mask = pad_right([it.pos_ids for _, it in items], self.pad_id)
        neg_ids, neg_mask = pad_right([it.neg_ids for _, it in items], self.pad_id)
        index = torch.tensor([i for i, _ in items], dtype=torch.long)
        answer_class = torch.tensor([it.answer_class for _, it in items], dtype=torch.long)
        return PairBatch(prompt_ids, prompt_mask, pos_ids, pos_mask, neg_ids, neg_mask, index, answer_class)


class PolarityDataModule(L.LightningDataModule):
    """Polarity pairs from a named dataset or a file, split with a seed and tokenised for the model.

    The tokenizer normally comes from the model, which calls :meth:`set_tokenizer` (or sets
    :attr:`tokenizer`); ``tokenizer`` may also name one to load. The data is read, validated and split when
    the module is built (:meth:`read`; no tokenizer needed), so a bad file fails before training starts;
    tokenisation happens as soon as a tokenizer is known, at the latest when
    a dataloader is requested. With ``skip_bad_rows`` unusable rows, including pairs over ``max_length``,
    are left out, logged as a warning with their count and listed in :attr:`skipped`; without it the first
    one raises :class:`~lightning_split.data.pairs.BadRowError`.

    Where the splits come from (the sizes are printed once when the data is read):

    - a named dataset: its own split (Psychopathy 500/50/100 balanced by answer, PowerSeeking 500/50/200
      from its train and test files, the embedded sentiment set by its ``split`` field);
    - one data file (``dataset: path``): if every row has a ``split`` field (``train``, ``validation``,
      ``val``, ``valid``, ``dev`` or ``test``) the rows go where it says; otherwise the file is drawn into
      test 10%, validation 10% and train the rest (80/10/10), with a seed, balanced by answer for Yes/No
      data and by group for grouped data;
    - one file per split (``train_file``, ``val_file``, ``test_file``, e.g. BiPO's ``*-train.csv`` and
      ``*-test.csv``, with ``dataset`` left unset): each split takes its file; without ``val_file``,
      validation is drawn from the train file (10% of it unless ``val_size`` is given).

    ``train_size``/``val_size``/``test_size`` replace these defaults with seeded samples of the given size.

    AxBench (``dataset: axbench``, ``axbench-concept500`` or an AxBench ``train_data.parquet``; see
    :mod:`lightning_split.data.axbench`): ``concepts`` selects concept ids, the sizes count per concept (default
    64 train / 0 validation / 8 test, seeded per concept), and each pair's negative is the backbone's own
    unsteered greedy reply to the instruction, generated when the backbone is known (the model's setup, or
    :meth:`set_backbone`) and cached on disk (``<converted-model cache>/axbench-negatives``, see
    :mod:`lightning_split.data.axbench_negatives`); until then the pairs' negatives are empty.

    Args:
        dataset: ``psychopathy``, ``power-seeking``, ``sentiment`` or the path of a ``.jsonl``/``.csv``/
            ``.parquet`` file; unset: ``sentiment`` (embedded), unless split files are given. A file is split
            by its ``split`` column when every row has one (``train``, ``validation``/``val``/``valid``/``dev``,
            ``test``), else drawn 80/10/10 into train/validation/test with the seed.
        data_dir: the data directory for named datasets (else ``$LIGHTNING_SPLIT_DATA_DIR``, else
            ``../shared/data`` relative to the working directory).
        train_file: the train split's own file (instead of ``dataset``).
        val_file: the validation split's own file (instead of ``dataset``; unset: drawn from ``train_file``).
        test_file: the test split's own file (instead of ``dataset``).
        tokenizer: a tokenizer to load (hub id, folder or ``.gguf`` file) when the model does not set one.
        batch_size: training batch size.
        eval_batch_size: validation, test and predict batch size.
        train_size: training pairs (None: the dataset's default, e.g. 500 for Psychopathy/PowerSeeking; the
            rest of a file after test and validation).
        val_size: validation pairs (None: the dataset's default, 50 for Psychopathy/PowerSeeking, 10% of a
            file).
        test_size: test pairs (None: the dataset's default, 100 for Psychopathy, 200 for PowerSeeking, 10% of
            a file, the whole test file).
        seed: seed of the splits and of the training shuffle.
        max_length: the most tokens of a prompt plus its longer completion.
        skip_bad_rows: leave out and count unusable rows instead of stopping at the first.
        system_prompt: optional system message for the chat template.
        num_workers: dataloader worker processes.
        data_format: ``auto`` (from the extension), ``jsonl``, ``csv`` or ``parquet``.
        question_field: overrides the detected question field.
        matching_field: overrides the detected matching-completion field.
        not_matching_field: overrides the detected not-matching-completion field.
        group_field: a field that groups rows (AxBench ``concept_id``).
        use_chat_template: None uses the tokenizer's chat template when it has one; False uses plain text.
        concepts: AxBench concept ids to use (None: every concept of the file); only for AxBench datasets.
        negative_max_new_tokens: AxBench only: most tokens of the backbone's reply that serves as a negative.

    Attributes:
        answer_classes: the dataset's answer classes after :meth:`setup` (``["No", "Yes"]`` for Psychopathy,
            ``[]`` for free text); every batch carries each pair's class id in ``PairBatch.answer_class``.
    """

    def __init__(
        self,
        dataset: str | None = None,
        data_dir: str | None = None,
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        tokenizer: str | None = None,
        batch_size: int = 4,
        eval_batch_size: int = 8,
        train_size: int | None = None,
        val_size: int | None = None,
        test_size: int | None = None,
        seed: int = 42,
        max_length: int = 512,
        skip_bad_rows: bool = False,
        system_prompt: str | None = None,
        num_workers: int = 0,
        data_format: str = "auto",
        question_field: str | None = None,
        matching_field: str | None = None,
        not_matching_field: str | None = None,
        group_field: str | None = None,
        use_chat_template: bool | None = None,
        concepts: list[int] | None = None,
        negative_max_new_tokens: int = 128,
    ) -> None:
        super().__init__()
        by_name = tokenizer is None or isinstance(tokenizer, str)
        self.save_hyperparameters(ignore=[] if by_name else ["tokenizer"])
        split_files = {"train": train_file, "validation": val_file, "test": test_file}
        self.split_files = {split: path for split, path in split_files.items() if path is not None}
        if self.split_files and dataset is not None:
            raise DataFileError(
                f"data options dataset={dataset!r} and {[SPLIT_FILE_OPTIONS[k] for k in self.split_files]} both "
                "say where the data is; unset one (on the command line: --data.dataset null)"
            )
        self.dataset = dataset if dataset is not None or self.split_files else "sentiment"
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.sizes = (train_size, val_size, test_size)
        self.seed = seed
        self.max_length = max_length
        self.skip_bad_rows = skip_bad_rows
        self.system_prompt = system_prompt
        self.num_workers = num_workers
        self.data_format = data_format
        fields = {
            "question": question_field,
            "matching": matching_field,
            "not_matching": not_matching_field,
            "group": group_field,
        }
        self.field_map = {k: v for k, v in fields.items() if v is not None} or None
        self.use_chat_template = use_chat_template
        self.concepts = concepts
        self.negative_settings = NegativeSettings(max_new_tokens=negative_max_new_tokens)
        self.negatives: ReplyCache | None = None
        self._backbone: Any = None
        self.resolved: ResolvedDataset | None = None
        self.splits: Splits | None = None
        self.answer_classes: list[str] = []
        self.read_skipped: list[SkippedRow] = []
        self.length_skipped: list[SkippedRow] = []
        self._kept: Splits | None = None
        self._tokenized: dict[str, list[TokenizedPair]] | None = None
        self._pair_tokenizer: PairTokenizer | None = None
        self._tokenizer: Any = None
        self._tokenizer_name: str | None = None
        self.tokenizer = tokenizer
        self.read()

    # ---- tokenizer -------------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        """The tokenizer object (loaded from the ``tokenizer`` name on first use if only a name was given)."""
        if self._tokenizer is None and self._tokenizer_name is not None:
            self._tokenizer = load_tokenizer(self._tokenizer_name)
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer: Any) -> None:
        self.set_tokenizer(tokenizer)

    def set_tokenizer(self, tokenizer: Any) -> None:
        """Sets the tokenizer (an object, or a name/path to load); drops any earlier tokenisation.

        Args:
            tokenizer: a Hugging Face tokenizer, a hub id / folder / ``.gguf`` path, or None.
        """
        if isinstance(tokenizer, (str, Path)):
            self._tokenizer, self._tokenizer_name = None, str(tokenizer)
        else:
            self._tokenizer, self._tokenizer_name = tokenizer, None
        self._tokenized, self._kept, self._pair_tokenizer = None, None, None
        self.length_skipped = []

    @property
    def pair_tokenizer(self) -> PairTokenizer:
        """The :class:`PairTokenizer` built from the tokenizer and the prompt options."""
        if self._pair_tokenizer is None:
            if self.tokenizer is None:
                raise RuntimeError(
                    "PolarityDataModule has no tokenizer: the model sets it with set_tokenizer(), "
                    "or pass `tokenizer:` (hub id, folder or .gguf file)"
                )
            self._pair_tokenizer = PairTokenizer(
                self.tokenizer, self.max_length, self.system_prompt, self.use_chat_template
            )
        return self._pair_tokenizer

    # ---- reading and splitting -------------------------------------------------------------------------
    def read(self) -> Splits:
        """Reads, validates and splits the data (once; the module calls it when it is built).

        Reading when the module is built means that a bad data file fails before training starts, before any
        logger, checkpoint or run folder is created. The split sizes are printed once (on rank 0).

        Returns:
            The splits.
        """
        if self.splits is None:
            if self.split_files:
                self.resolved = resolve_split_files(self.split_files)
            else:
                self.resolved = resolve_dataset(self.dataset, self.data_dir)
            if self.resolved.spec.kind == "axbench":
                self.splits = pending_splits(read_resolved(self.resolved, self.concepts), self.sizes, self.seed)
            else:
                self.splits = self._read_pairs(self.resolved)
            self.answer_classes = answer_classes([p for name in SPLIT_NAMES for p in self.splits[name]])
            sizes = " / ".join(f"{n} {name}" for name, n in self.splits.sizes().items())
            rank_zero_info(f"dataset {self.resolved.spec.name}: {sizes} pairs (seed {self.seed})")
        return self.splits

    def _read_pairs(self, resolved: ResolvedDataset) -> Splits:
        if self.concepts is not None:
            raise OptionError(
                f"data option concepts (data.concepts) selects AxBench concepts, but dataset "
                f"{resolved.spec.name!r} is not AxBench; unset concepts"
            )
        pools: dict[str, list[PolarityPair]] = {}
        for name, path in resolved.paths.items():
            result = read_pairs(path, self.data_format, self.field_map, self.skip_bad_rows)
            pools[name] = result.pairs
            self.read_skipped += [SkippedRow(result.source, line, why) for line, why in result.skipped]
        self._report_skipped("reading", self.read_skipped)
        train_size, val_size, test_size = self.sizes
        return split_dataset(resolved.spec, pools, train_size, val_size, test_size, self.seed)

    def set_backbone(self, model: Any) -> None:
        """Sets the model whose unsteered replies are AxBench negatives (under a Trainer, the module's ``backbone``
        is used when none is set)."""
        self._backbone = model

    def _complete_negatives(self) -> None:
        """Fills in the AxBench negatives (generated by the backbone, or from the cache) before tokenising."""
        assert self.splits is not None
        if not any(p.metadata.get("negative") == PENDING for name in SPLIT_NAMES for p in self.splits[name]):
            return
        module = getattr(getattr(self, "trainer", None), "lightning_module", None)
        model = self._backbone if self._backbone is not None else getattr(module, "backbone", None)
        if model is None:
            raise RuntimeError(
                "AxBench negatives are the backbone's own replies: call set_backbone(model) first, or run under a "
                "Trainer whose module has a `backbone`"
            )
        self.negatives = ReplyCache(model, self.tokenizer, self.negative_settings)
        self.splits, bad = complete_splits(
            self.splits, self.negatives, self.pair_tokenizer.prompt_ids, self.skip_bad_rows
        )
        new = [SkippedRow(err.source, err.line, err.problem) for err in bad]
        self.read_skipped += new
        self._report_skipped("generating AxBench negatives", new)
        rank_zero_info(
            f"AxBench negatives: {self.negatives.generated} generated, {self.negatives.reused} from the cache "
            f"{negatives_cache_dir()}"
        )

    def setup(self, stage: str | None = None) -> None:
        """Reads, validates and splits the data (if not done yet), and tokenises it if a tokenizer is known.

        Args:
            stage: the Lightning stage (unused: every split is prepared).
        """
        self.read()
        if self.tokenizer is not None:
            self._tokenize()

    @property
    def skipped(self) -> list[SkippedRow]:
        """Every row left out with ``skip_bad_rows``: unusable rows, then pairs over ``max_length``."""
        return self.read_skipped + self.length_skipped

    def _report_skipped(self, when: str, new: list[SkippedRow]) -> None:
        if new:
            first = "; ".join(f"{s.source}:{s.line} {s.reason}" for s in new[:3])
            log.warning(
                "skip_bad_rows: left out %d unusable row(s) of dataset %r while %s (first: %s)",
                len(new),
                self.resolved.spec.name if self.resolved else self.dataset,
                when,
                first,
            )

    def _tokenize(self) -> dict[str, list[TokenizedPair]]:
        if self._tokenized is not None:
            return self._tokenized
        if self.splits is None:
            self.setup()
        self._complete_negatives()
        assert self.splits is not None
        tok = self.pair_tokenizer
        self.length_skipped = []
        kept = Splits()
        tokenized: dict[str, list[TokenizedPair]] = {}
        for name in SPLIT_NAMES:
            kept_pairs, kept_ids = [], []
            for pair in self.splits[name]:
                try:
                    kept_ids.append(replace(tok(pair), answer_class=class_id(pair, self.answer_classes)))
                    kept_pairs.append(pair)
                except BadRowError as err:
                    if not self.skip_bad_rows:
                        raise
                    self.length_skipped.append(SkippedRow(err.source, err.line, err.problem))
            setattr(kept, name, kept_pairs)
            tokenized[name] = kept_ids
        self._report_skipped("tokenising", self.length_skipped)
        self._kept, self._tokenized = kept, tokenized
        return tokenized

    def pairs(self, split: str) -> list[PolarityPair]:
        """The pairs of a split (``train``, ``validation``/``val``, ``test``), in the order of its indices.

        After tokenisation, pairs skipped as too long are no longer in the list.

        Args:
            split: the split name.

        Returns:
            The split's pairs.
        """
        if self.splits is None:
            self.setup()
        assert self.splits is not None
        return (self._kept or self.splits)[split]

    def tokenized(self, split: str) -> list[TokenizedPair]:
        """The tokenised pairs of a split (tokenising every split on first use).

        Args:
            split: the split name.

        Returns:
            Token ids of each pair, in split order.
        """
        name = {"val": "validation", "valid": "validation", "dev": "validation"}.get(split, split)
        return self._tokenize()[name]

    def report(self) -> dict[str, Any]:
        """What was used, for recording with results: dataset, files, seed, split sizes, skipped rows, and for AxBench
        how the negatives were made (backbone identity, settings, counts generated and reused, cache folder)."""
        if self.splits is None:
            self.setup()
        assert self.resolved is not None and self.splits is not None
        return {
            "dataset": self.resolved.spec.name,
            "files": {k: str(v) for k, v in self.resolved.paths.items()},
            "seed": self.seed,
            "sizes": (self._kept or self.splits).sizes(),
            "answer_classes": self.answer_classes,
            "max_length": self.max_length,
            "skip_bad_rows": self.skip_bad_rows,
            "skipped": len(self.skipped),
            "skipped_rows": [(s.source, s.line, s.reason) for s in self.skipped],
            "negatives": self.negatives.describe() if self.negatives is not None else None,
        }

    # ---- dataloaders -----------------------------------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        """``(world size, global rank)`` of the attached trainer (``(1, 0)`` without one)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        """Training: the seeded, sharded, resumable loader; evaluation: split order, unrepeated shards under DDP."""
        dataset = PairDataset(self.tokenized(split))
        world, rank = self._world()
        common: dict[str, Any] = {
            "batch_size": batch_size,
            "collate_fn": PairCollator(self.pair_tokenizer.pad_id),
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
            "drop_last": False,
        }
        if shuffle:
            sampler = ResumableDistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
            return ResumableDataLoader(dataset, sampler=sampler, **common)
        return DataLoader(dataset, sampler=eval_sampler(dataset, world, rank), **common)

    def train_dataloader(self) -> DataLoader:
        """Training pairs in a permutation fixed by ``(seed, epoch)``; the last batch may be partial.

        Under DDP each rank gets a disjoint interleaved shard (see
        :class:`~lightning_split.data.samplers.ResumableDistributedSampler`), and the loader's position is saved
        in checkpoints so a mid-epoch resume continues at the next unseen batch.
        """
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation pairs in split order (under DDP: unrepeated shards, so every pair is counted once)."""
        return self._loader("validation", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test pairs in split order (under DDP: unrepeated shards, so every pair is counted once)."""
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The test pairs (their prompts are what generation uses), in split order."""
        return self._loader("test", self.eval_batch_size, shuffle=False)
