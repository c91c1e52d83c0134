"""PTN search: choose SSD's alpha without ground truth (docs/methods.md section 4).

With a_0 the original model's accuracy on the discovered set S_f (w.r.t. the poisoned
labels) and r_i = I_f,i / I_r,i, the search starts at s = |S_f| / (|S_f| + |D_r|) / 25 and
grows s by ``step`` (1.1) until the model dampened at alpha = the (100 - ln(1 + 100 s))-th
percentile of r has accuracy <= rho * a_0 on S_f.  The ratios are sorted once; each
alpha is then a lookup.  ``parallel`` consecutive values of s are dampened in one batched
call and evaluated in order, so the first s that meets the condition is the one returned,
exactly as in a sequential search.

The search fails safely and cheaply: it gives up before a candidate whose percentile lies
below ``min_percentile`` (95: s past about 1, where the schedule has left the range its
formula was made for) or which dampens more than ``max_dampened`` of all parameters (5%),
or after ``max_steps``.  The original parameters are never modified; a search that gives
up returns them unchanged (alpha = inf, ``converged`` False, ``stop`` says why) rather
than its most aggressive candidate (docs/potion.md has the measurement behind this).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

import torch
from pydantic import Field, Strict

from ieu_potion import kernels
from ieu_potion.config import Count, Fraction, Positive, Share, settings

log = logging.getLogger(__name__)


@settings
class PTNConfig:
    """``potion.ptn``: the search for the dampening strength (docs/methods.md section 4)."""

    rho: Annotated[float, Strict(), Field(ge=0, lt=1)] = 0.1  # over-forgetting buffer
    step: Annotated[float, Strict(), Field(gt=1)] = 1.1  # s grows by this factor per step
    max_steps: Count = 500  # the search stops here at the latest
    lam: Positive = 1.0  # SSD's lambda: dampening strength
    # candidate values of s dampened in one batched call; each is a copy of every parameter
    parallel: Annotated[int, Strict(), Field(ge=1, le=64)] = 8
    s_start: Fraction | None = None  # None: |S_f| / (|S_f| + |D_r|) / 25
    # give up below this percentile of the ratios
    min_percentile: Annotated[float, Strict(), Field(gt=0, lt=100)] = 95.0
    max_dampened: Share = 0.05  # give up past this share of dampened parameters


@dataclass
class SearchResult:
    parameters: torch.Tensor
    alpha: float
    s: float
    steps: int
    stop: str  # converged, min_percentile, max_dampened or max_steps
    base_accuracy: float
    trace: list[dict[str, float]] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        return self.stop == "converged"


def sorted_ratios(imp_forget: torch.Tensor, imp_retain: torch.Tensor) -> torch.Tensor:
    """I_f / I_r over all parameters, NaN and infinite values dropped, sorted (fp64)."""
    ratio = imp_forget.double() / imp_retain.double()
    return torch.sort(ratio[torch.isfinite(ratio)]).values


def percentile(sorted_values: torch.Tensor, p: float) -> float:
    """The p-th percentile (0..100) by linear interpolation, as numpy's default."""
    if len(sorted_values) == 0:
        raise ValueError("no finite importance ratio to take a percentile of")
    p = min(max(p, 0.0), 100.0)
    position = p / 100.0 * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    weight = position - low
    return float(sorted_values[low] * (1 - weight) + sorted_values[high] * weight)


def percent_for(s: float) -> float:
    return 100.0 - math.log(1.0 + 100.0 * s)


def ptn_search(
    theta0: torch.Tensor,
    imp_forget: torch.Tensor,
    imp_retain: torch.Tensor,
    accuracy_on_forget: Callable[[torch.Tensor], float],
    forget_size: int,
    retain_size: int,
    config: PTNConfig,
) -> SearchResult:
    """Run the search; ``accuracy_on_forget(theta)`` evaluates flat parameters on S_f."""
    ratios = sorted_ratios(imp_forget, imp_retain)
    base = accuracy_on_forget(theta0)
    target = config.rho * base
    s = config.s_start or forget_size / (forget_size + retain_size) / 25.0
    trace: list[dict[str, float]] = []
    log.info(
        "PTN: a_0 = %.4f on %d discovered samples; stop at accuracy <= %.4f",
        base,
        forget_size,
        target,
    )
    steps = 0
    stop = "max_steps"
    while steps < config.max_steps and stop == "max_steps":
        count = min(config.parallel, config.max_steps - steps)
        candidates = [s * config.step**j for j in range(count)]
        allowed = [c for c in candidates if percent_for(c) >= config.min_percentile]
        if len(allowed) < len(candidates):
            stop = "min_percentile"
        if not allowed:
            break
        alphas = torch.tensor(
            [percentile(ratios, percent_for(c)) for c in allowed],
            dtype=imp_forget.dtype,
            device=imp_forget.device,
        )
        thetas = kernels.dampen(theta0, imp_forget, imp_retain, alphas, config.lam)
        dampened = (thetas != theta0).double().mean(dim=1).tolist()
        for j, candidate in enumerate(allowed):
            if dampened[j] > config.max_dampened:
                stop = "max_dampened"
                break
            steps += 1
            accuracy = accuracy_on_forget(thetas[j])
            trace.append(
                {
                    "step": steps,
                    "s": candidate,
                    "percentile": percent_for(candidate),
                    "alpha": float(alphas[j]),
                    "dampened_share": dampened[j],
                    "forget_accuracy": accuracy,
                }
            )
            log.info(
                "PTN step %d: s %.5f, percentile %.3f, alpha %.4g, %.3f%% dampened, "
                "accuracy on S_f %.4f",
                steps,
                candidate,
                percent_for(candidate),
                float(alphas[j]),
                100 * dampened[j],
                accuracy,
            )
            if accuracy <= target:
                log.info("PTN chose alpha %.4g after %d steps", float(alphas[j]), steps)
                return SearchResult(
                    thetas[j].clone(), float(alphas[j]), candidate, steps, "converged", base, trace
                )
        s = candidates[-1] * config.step
    why = {
        "min_percentile": f"the next percentile falls below {config.min_percentile:g}",
        "max_dampened": f"the next candidate dampens over {100 * config.max_dampened:g}% "
        "of the parameters",
        "max_steps": f"{config.max_steps} steps are used up",
    }[stop]
    log.warning(
        "PTN gave up after %d steps without accuracy <= %.4f on S_f: %s; the model is left "
        "unchanged",
        steps,
        target,
        why,
    )
    return SearchResult(theta0.clone(), math.inf, s, steps, stop, base, trace)
