"""Benchmark: memory and training-step time of SPLIT LoRA on fp32, bf16, int8, NF4 and NF4-dq backbones.

Each (model, mode) runs in its own child process (clean peak memory) on the CPU: a ``lightning.Trainer`` fits
SPLIT with ``LoRAOptions(rank=4)`` at the middle block on the embedded sentiment pairs (batch 4,
bidirectional, so 8 packed rows a step) for ``--warmup + --steps`` steps, then saves a checkpoint. Measured:

- ``weights``: bytes of the backbone's tensors (parameters, buffers and bitsandbytes quantization
  constants: 4-bit ``absmax``/nested constants, int8 row scales);
- ``loaded``: anonymous resident memory (``RssAnon``: heap, not the memory-mapped safetensors files) after
  the backbone and control are built and every weight was read once, above the state before;
- ``train peak``: the largest ``RssAnon`` during the steps (sampled every 5 ms) above the state after
  loading: activations, gradients, optimizer state, lower-block caches;
- ``peak RSS``: the kernel's high-water mark ``VmHWM`` of the whole run (file-backed pages included);
- ``saved``: bytes of the tensors autograd keeps for the backward pass of the first step (counted with
  ``torch.autograd.graph.saved_tensors_hooks``, each storage once): the activation memory, independent of the
  machine's load and of the allocator, and what carries over to a GPU;
- ``step``: median wall time of the measured steps (the first epoch: every batch also runs the frozen
  lower blocks once for its new pairs);
- checkpoint (``trainer.save_checkpoint``) and ``control.safetensors`` sizes.

Modes: ``fp32`` (``precision=32-true``), ``bf16`` (``bf16-true``: bf16 backbone, float32 control), ``int8``
(LLM.int8, fp32 compute), ``nf4`` and ``nf4-dq`` (4-bit NF4, fp32 compute; QLoRA preparation, as for every
quantized LoRA run).

Usage:
    python scripts/bench_precision.py                      # both models, every mode; prints a table
    python scripts/bench_precision.py --append-doc         # ... and appends a section to docs/benchmarks.md
    python scripts/bench_precision.py --models smollm2-135m-instruct --modes fp32,nf4
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MODES = ("fp32", "bf16", "int8", "nf4", "nf4-dq")
MODELS = ("smollm2-135m-instruct", "gemma3-270m")
MiB = 2**20


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _anon() -> int:
    return _status("RssAnon")


def _trim() -> None:
    import ctypes

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class SavedBytes:
    """Counts the bytes of the distinct storages autograd saves for backward while it is active.

    Args:
        exclude: storage addresses not to count (the weights: saved for backward, but not activations).
    """

    def __init__(self, exclude: set[int]) -> None:
        import torch

        self.total = 0
        self._seen: set[tuple[int, int]] = set()
        self._exclude = exclude
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, tensor: Any) -> Any:
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key not in self._seen and key[0] not in self._exclude:
            self._seen.add(key)
            self.total += storage.nbytes()
        return tensor

    def __enter__(self) -> SavedBytes:
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


class AnonPeak:
    """Samples ``RssAnon`` every ``interval`` seconds in a thread and keeps the largest value."""

    def __init__(self, interval: float = 0.005) -> None:
        import threading

        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval,), daemon=True)

    def _loop(self, interval: float) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _anon())
            time.sleep(interval)

    def start(self) -> None:
        self.peak = _anon()
        self._thread.start()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, _anon())


def tensor_bytes(model: Any) -> int:
    """Bytes of a model's parameters and buffers plus bitsandbytes quantization constants."""
    total = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    for module in model.modules():
        weight = getattr(module, "weight", None)
        state = getattr(weight, "quant_state", None)
        if state is not None:  # 4-bit: absmax (and, double-quantized, its own absmax and code)
            total += state.absmax.numel() * state.absmax.element_size()
            if getattr(state, "state2", None) is not None:
                total += sum(t.numel() * t.element_size() for t in (state.state2.absmax, state.state2.code))
        scale = getattr(weight, "SCB", None)
        if scale is None:
            scale = getattr(getattr(module, "state", None), "SCB", None)
        if scale is not None:  # int8 row scales
            total += scale.numel() * scale.element_size()
    return total


def child(model_name: str, mode: str, args: argparse.Namespace) -> None:
    """One measurement (runs in its own process); writes a JSON record to ``args.out``.

    ``mode`` is ``fp32``, ``bf16`` or a quantization (``int8``, ``nf4``, ``nf4-dq``), optionally with
    ``+bf16`` (for example ``nf4-dq+bf16``: 4-bit weights, ``bf16-true`` precision, the GPU configs' setting).
    """
    warmup, steps, threads, layer = args.warmup, args.steps, args.threads, args.layer
    import lightning as L
    import torch

    sys.path.insert(0, str(REPO))
    from lightning_split import SteeringModule
    from lightning_split.data.datamodule import PolarityDataModule
    from lightning_split.interventions import LoRAOptions
    from lightning_split.objectives import SPLIT

    torch.set_num_threads(threads)
    L.seed_everything(0, verbose=False)
    weights_mode, _, half = mode.partition("+")
    quantization = weights_mode if weights_mode in ("int8", "nf4", "nf4-dq") else None
    precision = "bf16-true" if "bf16" in (weights_mode, half) else "32-true"
    record: dict[str, Any] = {
        "model": model_name,
        "mode": mode,
        "precision": precision,
        "threads": threads,
        "warmup": warmup,
        "steps": steps,
    }
    baseline = _anon()
    times: list[float] = []
    losses: list[float] = []
    sampler = AnonPeak()

    class Probe(L.Callback):
        def on_fit_start(self, trainer: L.Trainer, pl_module: Any) -> None:
            backbone = pl_module.backbone
            record["layer"] = pl_module.control_layers[0]
            record["num_layers"] = pl_module.layout.num_layers
            record["weights"] = tensor_bytes(backbone)
            record["backbone_dtype"] = str(backbone.get_input_embeddings().weight.dtype).replace("torch.", "")
            with torch.no_grad():  # read every weight once, as the first step would
                for tensor in list(backbone.parameters()) + list(backbone.buffers()):
                    tensor.sum()
            _trim()
            record["anon_after_load"] = _anon()
            record["loaded"] = record["anon_after_load"] - baseline
            sampler.start()

        def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, i: int) -> None:
            if not times:
                weights = [*pl_module.parameters(), *pl_module.backbone.parameters(), *pl_module.backbone.buffers()]
                self._saved = SavedBytes({w.untyped_storage().data_ptr() for w in weights}).__enter__()
            self._t = time.perf_counter()

        def on_before_backward(self, trainer: L.Trainer, pl_module: Any, loss: Any) -> None:
            if not times:
                self._saved.__exit__(None, None, None)
                record["saved"] = self._saved.total

        def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, i: int) -> None:
            times.append(time.perf_counter() - self._t)
            losses.append(float(outputs["loss"]))
            if len(times) == 1:
                lengths = batch.prompt_mask.sum(1) + batch.pos_mask.sum(1) + batch.neg_mask.sum(1)
                copies = len(pl_module.objective.passes(pl_module.form))  # add (and sub) passes
                record["tokens_per_step"] = copies * int(lengths.sum())
                record["padded_tokens_per_step"] = copies * len(batch) * int(lengths.max())
                record["completion_tokens_per_step"] = copies * int(batch.pos_mask.sum() + batch.neg_mask.sum())

        def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
            record["train_peak"] = sampler.stop() - record["anon_after_load"]
            record["peak_rss"] = _status("VmHWM")

    with tempfile.TemporaryDirectory() as tmp:
        module = SteeringModule(
            backbone=model_name, form=LoRAOptions(rank=4), layer=layer, training={"lr": 0.01},
            backbone_options={"quantization": quantization},
            objective=SPLIT(bidirectional=not args.one_way),
        )  # fmt: skip
        size = args.batch_size * (warmup + steps)
        data = PolarityDataModule(
            dataset=args.dataset, batch_size=args.batch_size, train_size=size, val_size=2, test_size=2
        )
        trainer = L.Trainer(
            accelerator="cpu", precision=precision, max_steps=warmup + steps, limit_val_batches=0,
            num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, default_root_dir=tmp, callbacks=[Probe()],
        )  # fmt: skip
        trainer.fit(module, datamodule=data)
        ckpt = Path(tmp) / "bench.ckpt"
        trainer.save_checkpoint(ckpt)
        record["checkpoint_bytes"] = ckpt.stat().st_size
        record["control_bytes"] = (Path(tmp) / "control" / "control.safetensors").stat().st_size
    measured = times[warmup:]
    record.update(
        step_median=statistics.median(measured),
        step_min=min(measured),
        step_max=max(measured),
        loss_first=losses[0],
    )
    args.out.write_text(json.dumps(record))


def load_average() -> str:
    """``uptime``'s load averages (1, 5, 15 min)."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def table(records: list[dict[str, Any]]) -> str:
    """The markdown table of the records."""
    lines = [
        "| model | mode | backbone dtype | layer | weights | loaded (anon) | train peak above loaded | saved "
        "| peak RSS | step (median, min–max; measured steps after warm-up ones) | first-step loss | checkpoint "
        "| control.safetensors |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['mode']} | failed: {r['error'][:80]} | | | | | | | | | | |")
            continue
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['backbone_dtype']} | {r['layer']}/{r['num_layers']} "
            f"| {r['weights'] / MiB:.0f} MiB | {r['loaded'] / MiB:.0f} MiB | {r['train_peak'] / MiB:.0f} MiB "
            f"| {r['saved'] / MiB:.0f} MiB | {r['peak_rss'] / MiB:.0f} MiB "
            f"| {r['step_median']:.2f} s ({r['step_min']:.2f}–{r['step_max']:.2f}; {r['steps']} after {r['warmup']}) "
            f"| {r['loss_first']:.3f} | {r['checkpoint_bytes'] / 1024:.0f} KiB "
            f"| {r['control_bytes'] / 1024:.0f} KiB |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layer", type=int, default=None, help="steered block (default: the middle one)")
    parser.add_argument("--dataset", default="sentiment", help="dataset name or file of the training pairs")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per step")
    parser.add_argument("--one-way", action="store_true", help="SPLIT's add pass only (bidirectional=False)")
    parser.add_argument("--json", type=Path, default=None, help="also write the records here")
    parser.add_argument("--append-doc", action="store_true", help="append a section to docs/benchmarks.md")
    parser.add_argument("--records", type=Path, default=None, help="render the records of an earlier --json run")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args)
        return

    start_load = load_average()
    records = []
    if args.records:  # render earlier measurements instead of running
        saved = json.loads(args.records.read_text())
        records, start_load = saved["records"], saved["load_start"]
    for model in [] if args.records else args.models.split(","):
        for mode in args.modes.split(","):
            with tempfile.NamedTemporaryFile(suffix=".json") as out:
                cmd = [sys.executable, __file__, "--child", model, mode, "--out", out.name]
                cmd += ["--warmup", str(args.warmup), "--steps", str(args.steps), "--threads", str(args.threads)]
                cmd += ["--layer", str(args.layer)] if args.layer is not None else []
                cmd += ["--dataset", args.dataset, "--batch-size", str(args.batch_size)]
                cmd += ["--one-way"] if args.one_way else []
                began = time.perf_counter()
                done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
                if done.returncode != 0:
                    record = {"model": model, "mode": mode, "error": done.stderr.strip().splitlines()[-1]}
                else:
                    record = json.loads(Path(out.name).read_text())
                record["wall"] = time.perf_counter() - began
                record["load_average_after"] = load_average()
                records.append(record)
                print(json.dumps(record), flush=True)
    end_load = saved["load_end"] if args.records else load_average()
    print(table(records))
    if args.json:
        args.json.write_text(json.dumps({"records": records, "load_start": start_load, "load_end": end_load}, indent=2))
    if args.append_doc:
        import torch

        machine = f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}"
        section = (
            f"\n## Precision and quantization: memory and step time (SPLIT LoRA) — {dt.date.today()}\n\n"
            f"Command: `python scripts/bench_precision.py --append-doc` ({args.threads} torch threads; "
            "the step column says how many warm-up and measured steps each row ran)\n\n"
            f"Machine: {machine}; load average (1/5/15 min) {start_load} at the start, {end_load} at the end: "
            "a load above the core count means other jobs ran and the times are inflated.\n\n"
            "Setup: SPLIT with `LoRAOptions(rank=4)` at the middle block, embedded sentiment pairs, batch 4, "
            "bidirectional (8 packed rows a step), CPU bitsandbytes kernels (compute dtype float32 for int8/NF4). "
            "`weights` counts tensor bytes (quantization constants included); `loaded` and `train peak` are "
            "anonymous resident memory (heap; the memory-mapped safetensors files of an fp32 load are not in it) "
            "above the state before loading and after loading; `peak RSS` is the whole process's high-water "
            "mark.\n\n" + table(records) + "\n"
        )
        with open(REPO / "docs" / "benchmarks.md", "a") as doc:
            doc.write(section)
        print(f"appended to {REPO / 'docs' / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
