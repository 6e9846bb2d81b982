"""Grid search: one complete run per combination of parameter values, and a summary table.

``--grid lr=1e-3,3e-4 batch_size=2,4`` trains four runs, in ``RUN_DIR/lr=0.001_batch_size=2/`` and so
on (each a normal run folder that can be packaged), and after each one rewrites
``RUN_DIR/grid_summary.csv``: one row per combination with its best epoch and validation metrics,
ranked by the use case's ``main_metric`` (rank 1 is best). With ``resume`` the sub-runs that exist
are resumed and the others started.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from emzoo.errors import UsageError
from emzoo.train.discovery import get_usecase
from emzoo.train.params import load_param_file, parse_value, resolve_params, split_assignment
from emzoo.train.run import LATEST, check_trainer_params
from emzoo.train.runfiles import write_csv
from emzoo.train.usecase import UseCase

SUMMARY = "grid_summary.csv"


def parse_grid(items: Iterable[str], defaults: Mapping[str, Any]) -> dict[str, list[Any]]:
    """``["lr=1e-3,3e-4"]`` -> ``{"lr": [0.001, 0.0003]}``, typed like the defaults."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, text = split_assignment(item)
        if name not in defaults:
            raise UsageError(f"{{grid}}: unknown parameter {name!r} (known: {', '.join(sorted(defaults))})")
        if name in grid:
            raise UsageError(f"{{grid}}: {name} is given twice")
        values = [parse_value(name, v, defaults[name]) for v in text.split(",") if v.strip()]
        if not values:
            raise UsageError(f"{{grid}} {item!r}: give the values separated by commas (e.g. {name}=1,2)")
        grid[name] = values
    if not grid:
        raise UsageError("{grid} needs at least one KEY=V1,V2,... ")
    return grid


def run_name(combination: Mapping[str, Any]) -> str:
    """A folder name such as ``lr=0.001_batch_size=4``."""
    return "_".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in combination.items())


def _rank_key(value: Any, mode: str) -> float:
    if value is None or not math.isfinite(value):
        return math.inf
    return value if mode == "min" else -value


def grid_search(
    usecase: str | UseCase,
    data_dir: Path | None,
    run_dir: Path,
    grid: Mapping[str, Sequence[Any]] | Iterable[str],
    *,
    overrides: Mapping[str, Any] | Iterable[str] = (),
    epochs: int | None = None,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train every combination of ``grid`` (a mapping of value lists or ``KEY=V1,V2`` strings);
    returns the summary rows, best first."""
    from emzoo.train.trainer import train

    uc = get_usecase(usecase) if isinstance(usecase, str) else usecase
    if uc.params_file is None:
        raise UsageError(f"use case {uc.name!r} declares no params_file")
    defaults = load_param_file(uc.params_file)
    values = {n: p.value for n, p in defaults.items()}
    if not isinstance(grid, Mapping):
        grid = parse_grid(grid, values)
    fixed = resolve_params(defaults, overrides)
    clash = sorted(set(grid) & {k for k, v in fixed.items() if v != values[k]})
    if clash:
        raise UsageError(f"{', '.join(clash)} cannot be both set ({{overrides}}) and searched ({{grid}})")
    combinations = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    for combo in combinations:  # every combination checked before the first one trains
        params = {**fixed, **combo, **({"epochs": epochs} if epochs else {})}
        check_trainer_params(params)
        uc.check_params(params)
    if data_dir is not None:
        uc.check_data(Path(data_dir))

    run_dir = Path(run_dir)
    name, mode = uc.main_metric
    changed = {k: v for k, v in fixed.items() if v != values[k]}
    rows: list[dict[str, Any]] = []
    for combo in combinations:
        sub = run_dir / run_name(combo)
        again = resume and (sub / LATEST).is_file()
        result = train(
            uc,
            data_dir,
            sub,
            overrides={} if again else {**changed, **combo},
            epochs=epochs,
            resume=again,
            device=device,
            progress=progress,
        )
        row = {"run": sub.name, **combo, "status": result.status, "epochs_completed": result.epochs_completed}
        row["best_epoch"] = result.best_epoch
        row.update({f"val_{k}": v for k, v in result.best_metrics.items()})
        rows.append(row)
        ranked = sorted(rows, key=lambda r: _rank_key(r.get(f"val_{name}"), mode))
        for rank, r in enumerate(ranked, 1):
            r["rank"] = rank
        write_csv(run_dir / SUMMARY, ranked)
    return sorted(rows, key=lambda r: r["rank"])
