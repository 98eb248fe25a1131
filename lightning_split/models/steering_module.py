"""One LightningModule family: a frozen backbone, a control (interventions) and an objective.

:class:`SteeringModule` does the work shared by every method: it loads the backbone in
:meth:`~SteeringModule.configure_model`, builds the control, draws a multiplier per example, runs the
objective's passes through the packed engine, measures preference and utility log-odds on validation and
test pairs, generates steered text in ``predict``, checkpoints only the control, and saves the trained
control as an artefact at the end of ``fit``. The form and the objective are typed arguments that a config
picks by class path (``form: {class_path: lightning_split.interventions.LoRAOptions, init_args: {rank: 4}}``,
``objective: {class_path: lightning_split.objectives.SPLIT, init_args: {gamma: 5.0}}``), so a new form or
objective needs no change here.
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
from ..contracts import RunDescription, SweepSpec
from ..data.answers import class_label, trainer_answer_classes
from ..data.batch import PairBatch, repeat_batch
from ..engine import PairLogProbs, PairScorer
from ..generation import generate_steered
from ..interventions import FormOptions, Intervention, VectorOptions, build_control, form_of
from ..layout import ModelLayout, discover_layout, middle_layer
from ..metrics import (
    AnswerClassSplit,
    PairAccuracy,
    PreferenceLogOdds,
    UtilityLogOdds,
    balanced_mean,
)
from ..metrics.pair_metrics import CLASS_VALUES
from ..objectives import SPLIT, Objective
from ..placement import backbone_device_map, backbone_dtype, check_precision_plugin
from ..quantization import prepare_for_kbit_training
from ..steering import Positions
from ..sweep import LowerFn
from .options import (
    BackboneOptions,
    EvaluationOptions,
    GenerationOptions,
    TrainingOptions,
    as_options,
    check_steering_options,
    option_values,
)
from .pair_cache import LowerStateCache, ReferenceCache

DEFAULT_FORM = VectorOptions()
"""The default control: a steering vector (frozen options, so one shared instance is safe)."""

DEFAULT_OBJECTIVE = f"{SPLIT.__module__}.{SPLIT.__qualname__}"
"""The objective of a module given none (``objective: null``): SPLIT with its default coefficients."""

DEFAULT_TRAINING = TrainingOptions()
DEFAULT_EVALUATION = EvaluationOptions()
DEFAULT_GENERATION = GenerationOptions()
DEFAULT_BACKBONE_OPTIONS = BackboneOptions()

CHECKPOINT_KEY = "lightning_split"


class SteeringModule(L.LightningModule):
    """Trains a control of one form with one objective on polarity pairs.

    What the control is comes first (backbone, objective, form, blocks, positions); the other settings are
    four groups (:mod:`~lightning_split.models.options`), each given as its dataclass or as a mapping of its
    fields, e.g. ``training={"lr": 0.05}`` or, in a config, ``training: {lr: 0.05}``.

    Args:
        backbone: model to steer: a registered name (``smollm2-135m-instruct``, ``gemma3-270m``), a
            Hugging Face hub id, a local folder or a ``.gguf`` file.
        objective: the training loss, any :class:`~lightning_split.objectives.Objective` (``SPLIT``, ``SFT``,
            ``RePS``, ``DPO``, …) with its settings; ``None``: SPLIT with its default coefficients.
        form: the control form and its options: the options dataclass of a registered form
            (:data:`~lightning_split.interventions.FORM_REGISTRY`), e.g. ``VectorOptions(init_std=0.01)``,
            ``LoRAOptions(rank=4, alpha=None, dropout=0.0)``, ``LocalWeightOptions()``, ``ReFTOptions(rank=4)``,
            ``FullBlockOptions()``.
        layer: block to steer (``None``: the middle block).
        layers: several blocks (overrides ``layer``; mostly for ``full``).
        positions: steered tokens, the same in training and in use: ``all``, ``completion``, ``prompt``.
        training: multiplier grid, learning rate, weight decay (:class:`TrainingOptions`).
        evaluation: the multiplier of the validation/test metrics and their NLL reduction
            (:class:`EvaluationOptions`).
        generation: what ``predict`` generates (:class:`GenerationOptions`; not recorded in checkpoints).
        backbone_options: dtype, quantization, attention kernel, lower-block reuse, GGUF cache folder, layout
            overrides (:class:`BackboneOptions`).
    """

    def __init__(
        self,
        backbone: str = "smollm2-135m-instruct",
        objective: Objective | None = None,
        form: FormOptions = DEFAULT_FORM,
        layer: int | None = None,
        layers: list[int] | None = None,
        positions: Literal["all", "completion", "prompt"] = "all",
        training: TrainingOptions = DEFAULT_TRAINING,
        evaluation: EvaluationOptions = DEFAULT_EVALUATION,
        generation: GenerationOptions = DEFAULT_GENERATION,
        backbone_options: BackboneOptions = DEFAULT_BACKBONE_OPTIONS,
    ) -> None:
        super().__init__()
        # a mapping (from jsonargparse or a checkpoint's hyper-parameters) becomes its dataclass, checked
        self.training_options = training = as_options(TrainingOptions, training, "training")
        self.evaluation_options = evaluation = as_options(EvaluationOptions, evaluation, "evaluation")
        self.generation_options = as_options(GenerationOptions, generation, "generation")
        self.backbone_options = backbone_options = as_options(BackboneOptions, backbone_options, "backbone_options")
        # before anything is loaded or written
        check_steering_options(backbone, objective, form, layer, layers, positions, backbone_options)
        self.form_class: type[Intervention] = form_of(form)
        # Generation settings are not part of what the control is; keeping them out of the checkpoint's
        # hyper-parameters lets `predict --ckpt_path ...` take them from the command line.
        self.save_hyperparameters(ignore=["generation"])
        self.objective: Objective | None = objective if objective is not None else SPLIT()
        # The same plain hyper-parameters whether the CLI or Python built the module: form and objective as
        # {class_path, init_args}, each group as a dict of its fields (checkpoints load with weights_only=True,
        # loggers can write them), and the keys with which Lightning rebuilds a module through jsonargparse
        # (`load_from_checkpoint`, and `--ckpt_path` on the CLI, which keeps the command line's generation
        # settings only when the class path is the canonical one).
        self.hparams["form"] = _class_spec(form, form.values())
        self.hparams["objective"] = _class_spec(self.objective, self.objective.init_args())
        for name, options in (
            ("training", training),
            ("evaluation", evaluation),
            ("backbone_options", backbone_options),
        ):
            self.hparams[name] = option_values(options)
        self.hparams["_class_path"] = _class_spec(self, {})["class_path"]
        self.hparams["_instantiator"] = "lightning.pytorch.cli.instantiate_module"
        self.form_options = form
        self.form = self.form_class.form
        self.positions: Positions = positions
        self.multipliers = [float(m) for m in training.multipliers]
        self.strict_loading = False
        self.__dict__["_frozen_backbone"] = None  # deliberately not a submodule: see `backbone`
        self.tokenizer: Any = None
        self.layout: ModelLayout | None = None
        self.control: nn.ModuleList | None = None
        self.scorer: PairScorer | None = None
        self._lower_cache = LowerStateCache()
        self._reference_cache = ReferenceCache()
        reduction = evaluation.nll_reduction
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_{at}": nn.ModuleDict(
                    {
                        "pref_logodds": PreferenceLogOdds(reduction=reduction),
                        "util_logodds": UtilityLogOdds(reduction=reduction),
                        "pair_accuracy": PairAccuracy(reduction=reduction),
                    }
                )
                for stage in ("val", "test")
                for at in ("steered", "base")
            }
        )
        self.class_metrics = nn.ModuleDict(
            {
                f"{stage}_{at}": nn.ModuleDict(
                    {value: AnswerClassSplit(value, reduction=reduction) for value in CLASS_VALUES}
                )
                for stage in ("val", "test")
                for at in ("steered", "base")
            }
        )

    # ----------------------------------------------------------------- building
    @property
    def objective_name(self) -> str:
        """The objective's registry name (recorded in saved controls and trade-off reports)."""
        assert self.objective is not None
        return self.objective.name

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
        options = self.backbone_options
        trainer = self._trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        model, tokenizer = load_backbone(
            self.hparams.backbone,
            dtype=backbone_dtype(options.dtype, trainer.precision if trainer is not None else None),
            quantization=options.quantization,
            cache_dir=options.cache_dir,
            device_map=backbone_device_map(device, quantized=options.quantization is not None),
            attn_implementation=options.attn_implementation,
        )
        prepare = options.prepare_kbit
        if options.quantization and (self.form_class.prepare_kbit_by_default if prepare is None else prepare):
            model = prepare_for_kbit_training(model)
        model.requires_grad_(False).eval()
        self.__dict__["_frozen_backbone"] = model
        self.tokenizer = tokenizer
        self.layout = discover_layout(model, blocks_path=options.blocks_path, down_proj_path=options.down_proj_path)
        control = build_control(self.form_options, self.layout, self.control_layers)
        self.control = control.to(device=device, dtype=torch.float32)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.scorer = PairScorer(model, self.layout, pad_id=pad_id, reuse_lower=options.reuse_lower_layers)

    def setup(self, stage: str) -> None:
        """Loads the backbone early, empties the per-pair caches and hands the tokenizer to the data module."""
        if self._trainer is not None:
            check_precision_plugin(self.trainer, self.backbone_options.quantization)
        self.configure_model()
        self.clear_caches()
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
            lower = self.lower_states_fn()(batch, base, start).repeat(copies, 1, 1)
        return self.scorer.score_packed(packed, self.control, multiplier, self.positions, lower, ablate)

    def lower_states_fn(self) -> LowerFn:
        """``lower(batch, packed, start)``: the input of block ``start`` for ``packed``, from the lower cache.

        Rows are keyed by their content (:mod:`~lightning_split.models.pair_cache`), so any pairs may be
        passed; the trade-off sweep uses it to share the states computed by validation and test steps.
        """
        scorer = self.scorer
        assert scorer is not None, "the backbone is not loaded: call configure_model() first"
        return lambda batch, packed, start: self._lower_cache.states(scorer.model, packed, start, scorer.lower_states)

    def sweep_spec(self) -> SweepSpec:
        """What a multiplier sweep of the control runs on (:class:`~lightning_split.contracts.SweepTarget`).

        The lower-state provider is :meth:`lower_states_fn`'s cache, so a sweep reuses the states of the
        validation and test steps; the answer classes are those of the trainer's data module.
        """
        if self.scorer is None or self.control is None:
            raise RuntimeError("the backbone is not loaded: call configure_model() (Trainer runs call it) first")
        return SweepSpec(
            scorer=self.scorer,
            control=self.control,
            positions=self.positions,
            reduction=self.evaluation_options.nll_reduction,
            training_multipliers=tuple(self.multipliers),
            answer_classes=tuple(trainer_answer_classes(self._trainer)),
            lower=self.lower_states_fn(),
        )

    def describe(self) -> RunDescription:
        """Backbone, form, objective and steered blocks, as reports record them (``SweepTarget``)."""
        return RunDescription(
            model=str(self.hparams.backbone),
            form=self.form,
            objective=self.objective_name,
            layers=tuple(self.control_layers),
        )

    def reference(self, batch: PairBatch, like: PairLogProbs) -> PairLogProbs:
        """Unsteered log-probabilities of ``batch`` (computed once per distinct pair, then cached)."""
        assert self.scorer is not None

        def compute() -> PairLogProbs:
            with torch.no_grad():
                return self.score(batch, torch.zeros(len(batch), device=self.device))

        return self._reference_cache.logprobs(self.scorer.model, self.scorer.pack(batch), like, compute)

    def clear_caches(self) -> None:
        """Empties the lower-state and reference caches (done when each Trainer run starts: see ``setup``)."""
        self._lower_cache.clear()
        self._reference_cache.clear()

    # ----------------------------------------------------------------- training
    def training_step(self, batch: PairBatch, batch_idx: int) -> torch.Tensor:
        assert self.objective is not None
        passes = self.objective.passes(self.form_class)
        size = len(batch)
        m = torch.cat([p.sign * self.draw_multipliers(batch.index, k) for k, p in enumerate(passes)])
        ablate = None
        if any(p.ablate for p in passes):
            ablate = torch.cat([torch.full((size,), p.ablate, device=self.device) for p in passes])
        steered = self.score(batch, m, copies=len(passes), ablate=ablate)
        per_pass = [steered.select(slice(k * size, (k + 1) * size)) for k in range(len(passes))]
        per_pass = [lp.swapped() if p.swaps else lp for lp, p in zip(per_pass, passes)]
        reference = None
        if self.objective.needs_reference:
            base = self.reference(batch, per_pass[0] if not passes[0].swaps else per_pass[0].swapped())
            reference = [base.swapped() if p.swaps else base for p in passes]
        loss, logs = self.objective(per_pass, reference)
        self.log("train/loss", logs.pop("loss"), prog_bar=True, batch_size=size)
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=size)
        return loss

    def configure_optimizers(self) -> Any:
        """AdamW on the control only, learning rate decaying linearly to 0 over the run (per step)."""
        assert self.control is not None
        params = [p for p in self.control.parameters() if p.requires_grad]
        training = self.training_options
        optimizer = torch.optim.AdamW(params, lr=training.lr, weight_decay=training.weight_decay)
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
        m = torch.full((len(batch),), float(self.evaluation_options.multiplier), device=self.device)
        with torch.no_grad():
            steered = self.score(batch, m)
        base = self.reference(batch, steered)
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
        prompts = [batch.prompt_ids[i, :n] for i, n in enumerate(batch.prompt_mask.sum(1).tolist())]
        gen = self.generation_options
        return generate_steered(
            self.backbone,
            self.tokenizer,
            self.layout,
            self.control,
            prompts,
            torch.full((len(batch),), float(multiplier)),
            self.positions,
            max_new_tokens=gen.max_new_tokens,
            do_sample=gen.do_sample,
            temperature=gen.temperature,
        )

    def predict_step(self, batch: PairBatch, batch_idx: int) -> list[dict[str, Any]]:
        prompts = [
            self.tokenizer.decode(batch.prompt_ids[i, : int(n)], skip_special_tokens=False)
            for i, n in enumerate(batch.prompt_mask.sum(1).tolist())
        ]
        rows = []
        for m in self.generation_options.multipliers or [0.0, float(self.evaluation_options.multiplier)]:
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


def _class_spec(value: object, init_args: dict[str, Any]) -> dict[str, Any]:
    """``{class_path, init_args}`` of a class-typed argument, as jsonargparse writes it."""
    cls = type(value)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args}
