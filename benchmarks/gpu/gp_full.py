"""GPU run of the GP study's full-preset parts that need a GPU, inside a fixed time budget.

Usage (from the repository root):  python benchmarks/gpu/gp_full.py OUT_DIR [--budget-seconds 150]

Runs, in priority order, each only if the budget still allows it:
  1. scale: seconds per optimizer step, Cholesky vs CG vs RR-CG (paper budgets: J = 100,
     J_min = 80, rate 0.05), n = 1k .. 30k, and the crossover n;
  2. bias: the estimator-bias table at n = 1000 (three inputs), paper budgets;
  3. recovery: hyperparameter recovery at n = 2000 for as many true lengthscales as fit.
Writes OUT_DIR/gp_full.json and prints a compact summary. Needs torch, numpy, pydantic and the
project's own code only (matplotlib is optional: figures are skipped without it).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
logger = logging.getLogger("gp_full")
SMOKE: dict[str, Any] = {
    "timing_sizes": (200, 400),
    "timing_steps": 1,
    "bias_n": 200,
    "bias_cg_iterations": (10, 100),
    "bias_rff_features": (64, 256),
    "bias_repeats": 2,
    "bias_rr_repeats": 2,
    "recovery_n": 100,
    "steps": 5,
}


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--budget-seconds", type=float, default=150.0)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: checks the script end to end on a CPU"
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    arguments = _parse(argv)
    sys.path.insert(0, str(REPO_ROOT))  # run as a script: the project is not necessarily installed
    _ensure_pydantic()

    import torch

    from analysis.studies.base import describe_device
    from analysis.studies.gp import Params
    from analysis.studies.gp.bias import bias_table
    from analysis.studies.gp.kernels import Hyperparameters
    from analysis.studies.gp.recovery import recovery
    from analysis.studies.gp.study import derived_seeds
    from analysis.studies.gp.timing import timing

    if arguments.device == "cuda" and not torch.cuda.is_available():
        logger.error("gp_full: no CUDA device; pass --device cpu to try it on a CPU")
        return 2
    started = time.perf_counter()
    out_dir: Path = arguments.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    params = Params.preset("full", device=arguments.device)
    if arguments.smoke:
        params = params.model_copy(update=SMOKE)
    seeds = derived_seeds(params)
    device_name = describe_device(params.device)
    result: dict[str, Any] = {
        "device_name": device_name,
        "torch": torch.__version__,
        "params": params.model_dump(mode="json"),
        "seeds": seeds,
        "skipped": [],
    }

    def elapsed() -> float:
        return time.perf_counter() - started

    def note(message: str) -> None:
        logger.info("[%6.1f s] %s", elapsed(), message)

    def save() -> None:
        result["seconds"] = elapsed()
        (out_dir / "gp_full.json").write_text(json.dumps(result, indent=2))

    note(f"device: {device_name}")
    scale_hyper = Hyperparameters(
        (params.bias_lengthscale,), params.true_outputscale, params.true_noise
    )
    result["timing"] = timing(
        params.timing_sizes,
        params.timing_arms,
        params.dims,
        scale_hyper,
        params.estimator_settings(),
        params.timing_steps,
        seeds["timing"],
        params.device,
        note,
    )
    save()

    if elapsed() < 0.45 * arguments.budget_seconds:
        generator = torch.Generator().manual_seed(seeds["bias"])
        result["bias_table"] = bias_table(params, generator, note)
        save()
    else:
        result["skipped"].append("bias_table")

    # Recovery one true lengthscale at a time, while the last one's duration still fits.
    recovery_params = params.model_copy(update={"recovery_arms": ("cholesky", "cg", "rr_cg")})
    runs: list[dict[str, Any]] = []
    last_duration = 0.0
    for index, lengthscale in enumerate(params.recovery_lengthscales):
        if arguments.budget_seconds - elapsed() < max(last_duration, 10.0):
            result["skipped"].append(f"recovery for l = {lengthscale}")
            continue
        run_started = time.perf_counter()
        single = recovery_params.model_copy(update={"recovery_lengthscales": (lengthscale,)})
        runs.append(recovery(single, [seeds["recovery"][index]], note))
        last_duration = time.perf_counter() - run_started
        result["recovery_runs"] = runs
        save()
    save()
    _figures(result, out_dir, device_name)
    _summary(result)
    return 0


def _ensure_pydantic() -> None:
    """GPU boxes may carry torch and numpy only: then stand in for the sliver of pydantic that
    the study's parameter classes use (defaults, copies with updates, dumps; no validation)."""
    try:
        import pydantic  # noqa: F401
    except ImportError:
        import types

        shim = types.ModuleType("pydantic")
        shim.BaseModel = _PlainModel  # type: ignore[attr-defined]
        shim.ConfigDict = dict  # type: ignore[attr-defined]
        shim.Field = _field  # type: ignore[attr-defined]
        shim.model_validator = lambda **_kwargs: lambda function: function  # type: ignore[attr-defined]
        sys.modules["pydantic"] = shim
        logger.info("pydantic missing: using a minimal stand-in (no validation)")


class _FieldDefault:
    def __init__(self, default: Any = None, default_factory: Any = None) -> None:
        self.default, self.default_factory = default, default_factory


def _field(default: Any = None, *, default_factory: Any = None, **_constraints: Any) -> Any:
    return _FieldDefault(default, default_factory)


class _PlainModel:
    """Attributes from class defaults, overridden by keyword arguments."""

    def __init__(self, **values: Any) -> None:
        for klass in reversed(type(self).__mro__):
            for name in getattr(klass, "__annotations__", {}):
                if name.startswith("_") or name == "model_config":
                    continue
                default = klass.__dict__.get(name)
                if isinstance(default, _FieldDefault):
                    factory = default.default_factory
                    default = factory() if factory is not None else default.default
                setattr(self, name, default)
        for name, value in values.items():
            setattr(self, name, value)

    def model_copy(self, update: dict[str, Any] | None = None) -> Any:
        return type(self)(**{**self.__dict__, **(update or {})})

    def model_dump(self, mode: str = "python") -> dict[str, Any]:
        return dict(self.__dict__)


def _figures(result: dict[str, Any], out_dir: Path, device_name: str) -> None:
    try:
        from analysis.studies.gp import figures
    except ImportError:
        logger.info("matplotlib missing: figures skipped")
        return
    result["figures"] = [figures.timing_figure(result["timing"], out_dir, device_name)]
    if "bias_table" in result:
        result["figures"].append(figures.bias_figure(result["bias_table"], out_dir))


def _summary(result: dict[str, Any]) -> None:
    logger.info("== GP full preset on %s (%.0f s) ==", result["device_name"], result["seconds"])
    timing = result["timing"]
    arms = list(timing["per_n"][str(timing["sizes"][0])])
    logger.info("%8s %s", "n", " ".join(f"{arm:>12}" for arm in arms))
    for n in timing["sizes"]:
        row = timing["per_n"][str(n)]
        cells = []
        for arm in arms:
            seconds = row[arm]["seconds_per_step"]
            cells.append(f"{seconds:12.4f}" if seconds is not None else f"{'OOM':>12}")
        logger.info("%8d %s", n, " ".join(cells))
    logger.info("RR-CG faster than Cholesky from n = %s", timing["crossover_n"])
    for row in result.get("bias_table", {}).get("rows", []):
        paired = row.get("logdet_paired_bias")
        logger.info(
            "bias %-7s budget %7.1f  quad %+10.2f ± %7.2f  logdet %+9.2f ± %6.2f%s",
            row["estimator"],
            row["budget"],
            row["quadratic_bias"],
            row["quadratic_se"],
            row["logdet_bias"],
            row["logdet_se"],
            f"  (paired {paired:+.3f} ± {row['logdet_paired_se']:.3f})"
            if paired is not None
            else "",
        )
    for run in result.get("recovery_runs", []):
        optimum = run["cholesky_optimum"][0]
        logger.info(
            "recovery true l = %s: Cholesky optimum l = %.4f noise = %.5f",
            run["true_lengthscales"][0],
            optimum["lengthscale"],
            optimum["noise"],
        )
        for arm, columns in run["arms"].items():
            logger.info(
                "  %-8s l = %.4f noise = %.5f s2 = %.3f exact NLL = %.4f log(l^2/l_opt^2) = %+.3f"
                "  (%.0f s)",
                arm,
                columns["lengthscale"][0],
                columns["noise"][0],
                columns["outputscale"][0],
                columns["exact_nll"][0],
                columns["log_lengthscale_sq_error"][0],
                columns["seconds"][0],
            )
    if result["skipped"]:
        logger.info("skipped for time: %s", result["skipped"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
