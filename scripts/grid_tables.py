"""The comparison grid's results in the paper's Table 3 layout, with the paper's numbers beside ours.

:func:`paper_layout` turns the per-form comparisons of one dataset (``lightning-split compare`` on the grid's
cells, as ``scripts/run_grid.py`` makes them) into one table with a row per form and method, in the paper's
order; :func:`split_margins` gives SPLIT's preference gain at equal utility cost against SFT's and RePS's in the
same form, the paper's headline claim. The paper's values (Gemma-2-9B-IT and Qwen-2.5-7B-Instruct,
Tables 3 and 4; ``../shared/docs/paper-notes.md`` §6) are accuracy in % for Psychopathy and a gpt-4.1-mini judge
score (0–4) for PowerSeeking; ours are log-odds read-outs of SmolLM2-135M-Instruct, so the columns sit beside
each other, not on one scale.
"""

from __future__ import annotations

from collections.abc import Mapping

from lightning_split.analysis.compare import COST, GAIN, Comparison, Method, Summary
from lightning_split.analysis.compare_report import format_number

FORMS = ("local_weight", "lora", "vector", "reft")
"""The paper's form order (ReFT is ours alone)."""

OBJECTIVES = ("diffmean", "sft", "reps", "split", "dpo")
"""The paper's method order within a form (DPO from its Appendix B)."""

PAPER_MEASURE = {"psychopathy": "accuracy %", "power-seeking": "judged 0–4"}
"""What the paper's Table 3 reports per dataset."""

PAPER: dict[tuple[str, str], dict[str, tuple[float | None, float | None]]] = {
    # (form, objective): {dataset: (Gemma-2-9B-IT, Qwen-2.5-7B-Instruct)}; DPO is Table 4, Gemma only
    ("local_weight", "sft"): {"psychopathy": (100.00, 97.00), "power-seeking": (3.50, 3.53)},
    ("local_weight", "reps"): {"psychopathy": (100.00, 96.00), "power-seeking": (3.39, 3.24)},
    ("local_weight", "split"): {"psychopathy": (100.00, 98.00), "power-seeking": (3.59, 3.66)},
    ("local_weight", "dpo"): {"psychopathy": (91.00, None), "power-seeking": (1.91, None)},
    ("lora", "sft"): {"psychopathy": (100.00, 99.00), "power-seeking": (3.41, 3.05)},
    ("lora", "reps"): {"psychopathy": (99.00, 100.00), "power-seeking": (3.44, 3.34)},
    ("lora", "split"): {"psychopathy": (100.00, 100.00), "power-seeking": (3.56, 3.59)},
    ("lora", "dpo"): {"psychopathy": (99.00, None), "power-seeking": (1.87, None)},
    ("vector", "diffmean"): {"psychopathy": (53.00, 55.00), "power-seeking": (2.95, 3.17)},
    ("vector", "sft"): {"psychopathy": (97.00, 97.00), "power-seeking": (3.30, 3.58)},
    ("vector", "reps"): {"psychopathy": (98.00, 88.00), "power-seeking": (3.61, 3.63)},
    ("vector", "split"): {"psychopathy": (99.00, 98.00), "power-seeking": (3.62, 3.65)},
    ("vector", "dpo"): {"psychopathy": (99.00, None), "power-seeking": (1.93, None)},
}
VANILLA = {"psychopathy": (50.00, 50.00), "power-seeking": (1.87, 2.24)}
"""The paper's unsteered model (its "Vanilla" rows)."""

Group = tuple[Comparison, Mapping[str, str]]
"""One form's comparison and the label of each objective's method in it."""


def _paper(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _cell(method: Method, at: str, name: str) -> str:
    values = method.at_equal_cost if at == "equal_cost" else method.at_chosen
    return values[name].text() if name in values else "—"


def paper_layout(dataset: str, groups: Mapping[str, Group]) -> list[str]:
    """The markdown lines of one dataset's table: a row per form and method in the paper's order, our read-outs
    (mean ± sd over seeds) and the paper's Table 3/4 values beside them.

    Args:
        dataset: ``psychopathy`` or ``power-seeking`` (the paper columns; another dataset gets none).
        groups: ``{form: (comparison, {objective: method label})}``.
    """
    measure = PAPER_MEASURE.get(dataset)
    header = [
        "form",
        "method",
        "seeds",
        "accuracy at chosen m",
        "chosen m",
        "utility cost at chosen m",
        f"{GAIN} at equal cost",
        "m*",
    ]
    if measure:
        header += [f"paper Gemma-2-9B ({measure})", f"paper Qwen-2.5-7B ({measure})"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    first = next(iter(groups.values()))[0]
    unsteered = ["—", "unsteered", "", format_number(first.baseline.get("accuracy")), "0", "", "", ""]
    if measure:
        unsteered += [_paper(value) for value in VANILLA[dataset]]
    lines.append("| " + " | ".join(unsteered) + " |")
    for form in [f for f in FORMS if f in groups] + [f for f in groups if f not in FORMS]:
        comparison, labels = groups[form]
        methods = {method.label: method for method in comparison.methods}
        for objective in [o for o in OBJECTIVES if o in labels] + [o for o in labels if o not in OBJECTIVES]:
            method = methods.get(labels[objective])
            if method is None:
                continue
            m_star = _cell(method, "equal_cost", "m")
            row = [
                form.replace("_", " "),
                objective_name(objective),
                str(len(method.runs)),
                _cell(method, "chosen", "accuracy"),
                _cell(method, "chosen", "m"),
                _cell(method, "chosen", COST),
                _cell(method, "equal_cost", GAIN),
                m_star if method.budget_reached else f"≥ {m_star}",
            ]
            if measure:
                gemma, qwen = PAPER.get((form, objective), {}).get(dataset, (None, None))
                row += [_paper(gemma), _paper(qwen)]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def objective_name(objective: str) -> str:
    """``split`` → ``SPLIT`` as the paper writes it."""
    return {"diffmean": "DiffMean", "sft": "SFT", "reps": "RePS", "split": "SPLIT", "dpo": "DPO"}.get(
        objective, objective
    )


def split_margins(groups: Mapping[str, Mapping[str, Group]]) -> list[str]:
    """SPLIT's preference gain at equal utility cost against SFT's and RePS's in the same form, per dataset and
    form, as markdown lines. Each margin's spread is the two methods' sample standard deviations combined
    (independent seeds), and it reads "ahead" or "behind" when the margin exceeds that spread, "level" when not.
    Rows without SPLIT or without both baselines are left out."""
    header = ["dataset", "form", "SPLIT", "SFT", "RePS", "SPLIT − SFT", "SPLIT − RePS"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|---:|---:|---:|---:|---:|"]
    for dataset, forms in groups.items():
        for form, (comparison, labels) in forms.items():
            methods = {method.label: method for method in comparison.methods}
            split = methods.get(labels.get("split", ""))
            baselines = [methods.get(labels.get(objective, "")) for objective in ("sft", "reps")]
            if split is None or all(baseline is None for baseline in baselines):
                continue
            ours = split.at_equal_cost[GAIN]
            row = [dataset, form.replace("_", " "), ours.text()]
            row += ["—" if baseline is None else baseline.at_equal_cost[GAIN].text() for baseline in baselines]
            row += ["—" if baseline is None else margin(ours, baseline.at_equal_cost[GAIN]) for baseline in baselines]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def margin(ours: Summary, theirs: Summary) -> str:
    """``ours − theirs`` with the combined spread and a verdict: ``+0.191 ± 0.274 (level)``; ``(one seed)`` when
    either side has a single run."""
    difference = ours.mean - theirs.mean
    spread = (ours.sd**2 + theirs.sd**2) ** 0.5
    runs = min(ours.n, theirs.n)
    if runs < 2:
        return f"{difference:+.3f} (one seed)"
    verdict = "level" if abs(difference) <= spread else ("ahead" if difference > 0 else "behind")
    return f"{difference:+.3f} ± {spread:.3f} ({verdict})"
