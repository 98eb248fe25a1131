"""One LightningModule family: a frozen backbone, a control (interventions) and an objective.

:class:`SteeringModule` does the work shared by every method: it loads the backbone in
:meth:`~SteeringModule.configure_model`, builds the control, draws a multiplier per example, runs the
objective's passes through the packed engine, measures preference and utility log-odds on validation and
test pairs, generates steered text in ``predict``, checkpoints only the control, and saves the trained
control as an artefact at the end of ``fit``. The named subclasses in :mod:`lightning_split.models.methods`
only choose the objective and its settings, so a config reads ``class_path: lightning_split.SplitSteering``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import nn

from ..artifacts import CONTROL_DIRNAME, control_metadata, save_control
from ..backbone import load_backbone
from ..data.answers import class_label, trainer_answer_classes
from ..data.batch import PairBatch, repeat_batch
from ..engine import PairLogProbs, PairScorer
from ..interventions import FORMS, build_control
from ..layout import ModelLayout, discover_layout, middle_layer
from ..metrics import AnswerClassSplit, PairAccuracy, PreferenceLogOdds, UtilityLogOdds, balanced_mean
from ..metrics.pair_metrics import CLASS_VALUES
from ..objectives.base import Objective
from ..placement import backbone_device_map, backbone_dtype, check_precision_plugin
from ..quantization import prepare_for_kbit_training
from ..steering import POSITIONS, Positions, generated_value_for, steer
from .pair_cache import LowerStateCache, ReferenceCache

DEFAULT_MULTIPLIERS: tuple[float, ...] = tuple(round(0.2 * k, 1) for k in range(1, 11))
"""Training grid ``{0.2, 0.4, …, 2.0}`` (the released LoRA/local-weight grid; see ``multipliers``)."""

CHECKPOINT_KEY = "lightning_split"
GENERATION_ARGS = ("predict_multipliers", "max_new_tokens", "do_sample", "temperature")


class SteeringModule(L.LightningModule):
    """Trains a control of one form with one objective on polarity pairs.

    Args:
        backbone: model to steer: a registered name (``smollm2-135m-instruct``, ``gemma3-270m``), a
            Hugging Face hub id, a local folder or a ``.gguf`` file.
        form: control form: ``vector``, ``lora``, ``local_weight``, ``reft`` or ``full``.
        layer: block to steer (``None``: the middle block).
        layers: several blocks (overrides ``layer``; mostly for ``full``).
        rank: rank of ``lora`` and ``reft``.
        lora_alpha: LoRA alpha (``None``: equal to ``rank``).
        init_std: standard deviation of the initial vector (``vector`` form).
        positions: steered tokens, the same in training and in use: ``all``, ``completion``, ``prompt``.
        multipliers: training grid; each example draws its ``m`` uniformly from it. The released vector
            grid is ``{2, 4, …, 20}``; only the product ``m·v`` matters, so the default ``{0.2, …, 2.0}``
            is the same family with ``v`` ten times longer and keeps ``m = 1`` inside the grid.
        eval_multiplier: ``m`` at which validation and test metrics are logged.
        nll_reduction: ``mean`` (per-token, the authors' code) or ``sum`` (the paper's text) NLL in the
            log-odds metrics.
        lr: AdamW learning rate (linear decay to 0 over the run, no warm-up).
        weight_decay: AdamW weight decay.
        dtype: backbone dtype (``float32``, ``bfloat16``, ``float16``, ``auto``); ``trainer.precision``
            ``bf16-true``/``bf16-mixed`` turn ``float32`` into ``bfloat16`` (see
            :func:`~lightning_split.placement.backbone_dtype`). Also the bitsandbytes compute dtype.
        quantization: bitsandbytes backbone: ``None``, ``nf4``, ``nf4-dq`` (double quantization), ``int8``.
            The control is never quantized and stays float32.
        prepare_kbit: run peft's ``prepare_model_for_kbit_training`` on a quantized backbone (norms and
            embeddings upcast to float32, the QLoRA recipe); ``None``: for the ``lora`` form only.
        attn_implementation: ``sdpa`` or ``eager``; ``None``: the architecture's default (``sdpa`` where
            transformers supports it, ``eager`` otherwise, e.g. Gemma-2). Flash attention cannot take the
            packed pair mask.
        reuse_lower_layers: compute the frozen blocks below the control once per pair and reuse them
            across epochs (exact; only for architectures where it is, see ``ModelLayout``).
        blocks_path: layout override for unknown architectures (dotted path to the block list).
        down_proj_path: layout override (dotted path from a block to its down-projection).
        predict_multipliers: multipliers to generate with in ``predict``.
        max_new_tokens: generation length in ``predict``.
        do_sample: sample instead of greedy decoding in ``predict``.
        temperature: sampling temperature.
        cache_dir: where converted GGUF backbones are cached.
    """

    objective_name = "none"

    def __init__(
        self,
        backbone: str = "smollm2-135m-instruct",
        form: Literal["vector", "lora", "local_weight", "reft", "full"] = "vector",
        layer: int | None = None,
        layers: list[int] | None = None,
        rank: int = 4,
        lora_alpha: float | None = None,
        init_std: float = 0.01,
        positions: Literal["all", "completion", "prompt"] = "all",
        multipliers: list[float] | None = None,
        eval_multiplier: float = 1.0,
        nll_reduction: Literal["mean", "sum"] = "mean",
        lr: float = 0.01,
        weight_decay: float = 0.0,
        dtype: str = "float32",
        quantization: str | None = None,
        prepare_kbit: bool | None = None,
        attn_implementation: str | None = None,
        reuse_lower_layers: bool = True,
        blocks_path: str | None = None,
        down_proj_path: str | None = None,
        predict_multipliers: list[float] | None = None,
        max_new_tokens: int = 48,
        do_sample: bool = False,
        temperature: float = 1.0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"form={form!r} is not a control form; choose one of {FORMS}")
        if positions not in POSITIONS:
            raise ValueError(f"positions={positions!r}; choose one of {POSITIONS}")
        # Generation settings are not part of what the control is; keeping them out of the checkpoint's
        # hyper-parameters lets `predict --ckpt_path ...` take them from the command line.
        self.save_hyperparameters(ignore=list(GENERATION_ARGS))
        self.generation = {
            "predict_multipliers": predict_multipliers,
            "max_new_tokens": max_new_tokens,
            "do_sample": do_sample,
            "temperature": temperature,
        }
        self.form = form
        self.positions: Positions = positions
        self.multipliers = [float(m) for m in (multipliers or DEFAULT_MULTIPLIERS)]
        if not self.multipliers or any(m <= 0 for m in self.multipliers):
            raise ValueError(f"multipliers must be positive (the sign comes from the pass): {self.multipliers}")
        self.strict_loading = False
        self.__dict__["_frozen_backbone"] = None  # deliberately not a submodule: see `backbone`
        self.tokenizer: Any = None
        self.layout: ModelLayout | None = None
        self.control: nn.ModuleList | None = None
        self.scorer: PairScorer | None = None
        self.objective = self.build_objective()
        self._lower_cache = LowerStateCache()
        self._reference_cache = ReferenceCache()
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_{at}": nn.ModuleDict(
                    {
                        "pref_logodds": PreferenceLogOdds(reduction=nll_reduction),
                        "util_logodds": UtilityLogOdds(reduction=nll_reduction),
                        "pair_accuracy": PairAccuracy(reduction=nll_reduction),
                    }
                )
                for stage in ("val", "test")
                for at in ("steered", "base")
            }
        )
        self.class_metrics = nn.ModuleDict(
            {
                f"{stage}_{at}": nn.ModuleDict(
                    {value: AnswerClassSplit(value, reduction=nll_reduction) for value in CLASS_VALUES}
                )
                for stage in ("val", "test")
                for at in ("steered", "base")
            }
        )

    # ----------------------------------------------------------------- building
    def build_objective(self) -> Objective | None:
        """The objective of this method (subclasses override)."""
        return None

    @property
    def backbone(self) -> nn.Module | None:
        """The frozen base model, kept out of the module tree on purpose.

        Lightning therefore never moves it (``.to(device)`` is refused for 8-bit models), never casts it (the
        ``*-true`` precision plugins call ``module.to(dtype)``), DDP neither wraps nor broadcasts it, and it is
        never in a checkpoint. :meth:`configure_model` loads it straight onto this process's device in the dtype
        the trainer's precision implies (:mod:`lightning_split.placement`).
        """
        return self.__dict__.get("_frozen_backbone")

    def configure_model(self) -> None:
        """Loads the frozen backbone and builds the control (once; Lightning calls it before fit/test)."""
        if self.backbone is not None:
            return
        hp = self.hparams
        trainer = self._trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        model, tokenizer = load_backbone(
            hp.backbone,
            dtype=backbone_dtype(hp.dtype, trainer.precision if trainer is not None else None),
            quantization=hp.quantization,
            cache_dir=hp.cache_dir,
            device_map=backbone_device_map(device, quantized=hp.quantization is not None),
            attn_implementation=hp.attn_implementation,
        )
        prepare = hp.get("prepare_kbit")
        if hp.quantization and (self.form == "lora" if prepare is None else prepare):
            model = prepare_for_kbit_training(model)
        model.requires_grad_(False).eval()
        self.__dict__["_frozen_backbone"] = model
        self.tokenizer = tokenizer
        self.layout = discover_layout(model, blocks_path=hp.blocks_path, down_proj_path=hp.down_proj_path)
        control = build_control(
            self.form, self.layout, self.control_layers, rank=hp.rank, alpha=hp.lora_alpha, init_std=hp.init_std
        )
        self.control = control.to(device=device, dtype=torch.float32)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.scorer = PairScorer(model, self.layout, pad_id=pad_id, reuse_lower=hp.reuse_lower_layers)

    def setup(self, stage: str) -> None:
        """Loads the backbone early and hands its tokenizer to the data module."""
        if self._trainer is not None:
            check_precision_plugin(self.trainer, self.hparams.quantization)
        self.configure_model()
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "set_tokenizer"):
            datamodule.set_tokenizer(self.tokenizer)

    @property
    def control_layers(self) -> list[int]:
        """The blocks the control edits."""
        hp = self.hparams
        if hp.layers:
            return [int(x) for x in hp.layers]
        assert self.layout is not None
        return [hp.layer if hp.layer is not None else middle_layer(self.layout)]

    def to(self, *args: Any, **kwargs: Any) -> SteeringModule:
        """Moves the control and metrics to a device; a dtype given here is ignored.

        The control stays float32 (it is cast to the hidden states' dtype at the point of use) and the metrics
        float64, whatever precision plugin converts the module (``bf16-true`` calls ``module.to(bfloat16)``);
        the backbone's dtype comes from ``dtype``/``trainer.precision`` when it is loaded.
        """
        device, dtype, non_blocking, _ = torch._C._nn._parse_to(*args, **kwargs)
        if dtype is None:
            return super().to(*args, **kwargs)
        return super().to(device=device, non_blocking=non_blocking) if device is not None else self

    def train(self, mode: bool = True) -> SteeringModule:
        """Switches the control's mode; the frozen backbone always stays in eval mode (no dropout)."""
        super().train(mode)
        if self.backbone is not None:
            self.backbone.eval()
        return self

    # ----------------------------------------------------------------- forward
    def draw_multipliers(self, index: torch.Tensor, pass_number: int) -> torch.Tensor:
        """Draws ``m`` for each pair from the grid, determined by (seed, epoch, pair, pass) alone.

        The seed is the one given to ``seed_everything`` (``PL_GLOBAL_SEED``). The draw does not depend on
        batch composition, rank or RNG state, so DDP runs, single-process runs and resumed runs train on
        the same multipliers.
        """
        grid = self.multipliers
        seed = os.environ.get("PL_GLOBAL_SEED", "0")
        picks = []
        for i in index.tolist():
            key = f"{seed}:{self.current_epoch}:{i}:{pass_number}".encode()
            picks.append(grid[int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") % len(grid)])
        return torch.tensor(picks, dtype=torch.float32, device=self.device)

    def score(
        self,
        split: str,
        batch: PairBatch,
        multiplier: torch.Tensor,
        copies: int = 1,
        ablate: torch.Tensor | None = None,
    ) -> PairLogProbs:
        """Scores ``copies`` stacked copies of ``batch`` at per-row ``multiplier`` with the control on."""
        assert self.scorer is not None and self.control is not None
        rows = repeat_batch(batch, copies)
        packed = self.scorer.pack(rows)
        start = self.scorer.start_layer(self.control)
        lower = None
        if start > 0:
            base = self.scorer.pack(batch) if copies > 1 else packed
            lower = self._lower_cache.states(split, batch.index, base, start, self.scorer.lower_states)
            lower = lower.repeat(copies, 1, 1)
        return self.scorer.score_packed(packed, self.control, multiplier, self.positions, lower, ablate)

    def reference(self, split: str, batch: PairBatch, like: PairLogProbs) -> PairLogProbs:
        """Unsteered log-probabilities of ``batch`` (computed once per pair, then cached)."""

        def compute() -> PairLogProbs:
            with torch.no_grad():
                return self.score(split, batch, torch.zeros(len(batch), device=self.device))

        return self._reference_cache.logprobs(split, batch.index, like, compute)

    # ----------------------------------------------------------------- training
    def training_step(self, batch: PairBatch, batch_idx: int) -> torch.Tensor:
        assert self.objective is not None
        passes = self.objective.passes(self.form)
        size = len(batch)
        m = torch.cat([p.sign * self.draw_multipliers(batch.index, k) for k, p in enumerate(passes)])
        ablate = None
        if any(p.ablate for p in passes):
            ablate = torch.cat([torch.full((size,), p.ablate, device=self.device) for p in passes])
        steered = self.score("train", batch, m, copies=len(passes), ablate=ablate)
        per_pass = [steered.select(slice(k * size, (k + 1) * size)) for k in range(len(passes))]
        per_pass = [lp.swapped() if p.swaps else lp for lp, p in zip(per_pass, passes)]
        reference = None
        if self.objective.needs_reference:
            base = self.reference("train", batch, per_pass[0] if not passes[0].swaps else per_pass[0].swapped())
            reference = [base.swapped() if p.swaps else base for p in passes]
        loss, logs = self.objective(per_pass, reference)
        self.log("train/loss", logs.pop("loss"), prog_bar=True, batch_size=size)
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=size)
        return loss

    def configure_optimizers(self) -> Any:
        """AdamW on the control only, learning rate decaying linearly to 0 over the run (per step)."""
        assert self.control is not None
        params = [p for p in self.control.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total: list[int] = []

        def linear_decay(step: int) -> float:
            # The run length is read at the first step, not here: asking for it now would build the training
            # loader before a resumed run's checkpoint is restored, and its saved position would be ignored.
            if step == 0:
                return 1.0
            if not total:
                total.append(max(int(self.trainer.estimated_stepping_batches), 1))
            return max(0.0, 1.0 - step / total[0])

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_decay)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ----------------------------------------------------------------- evaluation
    def _evaluate(self, stage: str, batch: PairBatch) -> None:
        m = torch.full((len(batch),), float(self.hparams.eval_multiplier), device=self.device)
        with torch.no_grad():
            steered = self.score(stage, batch, m)
        base = self.reference(stage, batch, steered)
        for at, lp in (("steered", steered), ("base", base)):
            for name, metric in self.metrics[f"{stage}_{at}"].items():
                metric.update(lp.logp_pos, lp.logp_neg, lp.len_pos, lp.len_neg)
                self.log(f"{stage}/{name}" + ("" if at == "steered" else "_base"), metric, batch_size=len(batch))
            if batch.answer_class is not None:
                for metric in self.class_metrics[f"{stage}_{at}"].values():
                    metric.update(lp.logp_pos, lp.logp_neg, lp.len_pos, lp.len_neg, batch.answer_class)

    def _log_answer_classes(self, stage: str) -> None:
        """Logs accuracy and preference per answer class and the balanced accuracy, when answers form classes.

        Keys: ``{stage}/pair_accuracy/answer=Yes``, ``{stage}/pref_logodds/answer=Yes``,
        ``{stage}/balanced_accuracy`` (and ``_base`` after the metric name for the unsteered model). Every rank
        computes (the states are summed over ranks) and logs the same values.
        """
        names = trainer_answer_classes(self._trainer)
        keys = {"accuracy": "pair_accuracy", "preference": "pref_logodds"}
        for at, suffix in (("steered", ""), ("base", "_base")):
            metrics = self.class_metrics[f"{stage}_{at}"]
            values = {value: metric.compute() for value, metric in metrics.items()}
            present = torch.nonzero(~torch.isnan(values["accuracy"])).flatten().tolist()
            for c in present:
                for value, key in keys.items():
                    self.log(f"{stage}/{key}{suffix}/answer={class_label(names, c)}", values[value][c].item())
            if present:
                self.log(f"{stage}/balanced_accuracy{suffix}", balanced_mean(values["accuracy"]).item())
            for metric in metrics.values():
                metric.reset()

    def validation_step(self, batch: PairBatch, batch_idx: int) -> None:
        self._evaluate("val", batch)

    def test_step(self, batch: PairBatch, batch_idx: int) -> None:
        self._evaluate("test", batch)

    def on_validation_epoch_end(self) -> None:  # noqa: D102
        self._log_answer_classes("val")

    def on_test_epoch_end(self) -> None:  # noqa: D102
        self._log_answer_classes("test")

    # ----------------------------------------------------------------- generation
    def generate(self, batch: PairBatch, multiplier: float) -> list[str]:
        """Greedy (or sampled) steered continuations of the prompts of ``batch`` at ``multiplier``."""
        assert self.backbone is not None and self.layout is not None and self.control is not None
        lengths = batch.prompt_mask.sum(1)
        width = int(lengths.max())
        pad = self.scorer.pad_id if self.scorer is not None else 0
        ids = torch.full((len(batch), width), pad, dtype=torch.long, device=self.device)
        attn = torch.zeros_like(ids)
        for i, n in enumerate(lengths.tolist()):
            ids[i, width - n :] = batch.prompt_ids[i, :n]
            attn[i, width - n :] = 1
        token_mask = None
        if self.positions == "prompt":
            token_mask = attn.float()
        elif self.positions == "completion":
            token_mask = torch.zeros_like(attn, dtype=torch.float32)
        gen = self.generation
        sampling = {"do_sample": True, "temperature": gen["temperature"]} if gen["do_sample"] else {}
        with (
            torch.no_grad(),
            steer(
                self.layout,
                self.control,
                torch.full((len(batch),), float(multiplier), device=self.device),
                token_mask=token_mask,
                generated_value=generated_value_for(self.positions),
            ),
        ):
            out = self.backbone.generate(
                input_ids=ids,
                attention_mask=attn,
                max_new_tokens=gen["max_new_tokens"],
                pad_token_id=pad,
                do_sample=bool(gen["do_sample"]),
                **sampling,
            )
        return self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)

    def predict_step(self, batch: PairBatch, batch_idx: int) -> list[dict[str, Any]]:
        prompts = [
            self.tokenizer.decode(batch.prompt_ids[i, : int(n)], skip_special_tokens=False)
            for i, n in enumerate(batch.prompt_mask.sum(1).tolist())
        ]
        rows = []
        for m in self.generation["predict_multipliers"] or [0.0, float(self.hparams.eval_multiplier)]:
            for i, text in enumerate(self.generate(batch, m)):
                row = {"index": int(batch.index[i]), "multiplier": float(m), "prompt": prompts[i], "completion": text}
                rows.append(row)
        return rows

    # ----------------------------------------------------------------- checkpoints and artefacts
    def metadata(self) -> dict[str, Any]:
        """What identifies this control: backbone, form, layers and the settings it was trained with."""
        assert self.control is not None
        return control_metadata(self.control, dict(self.hparams), self.objective_name, self.multipliers)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keeps only the control's tensors (never the frozen backbone) and records what they belong to."""
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("control.")}
        checkpoint[CHECKPOINT_KEY] = self.metadata()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuses a checkpoint of another backbone, form or layer with a message that names both."""
        saved = checkpoint.get(CHECKPOINT_KEY)
        if saved is None:
            raise ValueError("this checkpoint was not written by lightning_split (no control metadata)")
        mine = self.metadata()
        for key in ("backbone", "form", "interventions"):
            if saved.get(key) != mine.get(key):
                raise ValueError(
                    f"checkpoint mismatch on {key!r}: the checkpoint has {saved.get(key)!r}, this run is "
                    f"configured with {mine.get(key)!r}; resume with the same model, form and layer"
                )
        unexpected = [k for k in checkpoint["state_dict"] if not k.startswith("control.")]
        if unexpected:
            raise ValueError(f"checkpoint holds tensors outside the control: {unexpected[:3]}")

    def on_fit_end(self) -> None:
        """Saves the trained control (safetensors + JSON) under the run directory (rank 0 only)."""
        log_dir = self.trainer.log_dir  # a broadcast under DDP: every rank must ask, not only rank 0
        if self.trainer.is_global_zero and self.control is not None:
            root = Path(log_dir or self.trainer.default_root_dir)
            path = save_control(root / CONTROL_DIRNAME, self.control, self.metadata())
            self.print(f"saved control to {path}")
