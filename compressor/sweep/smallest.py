"""The M-factor's P_min when it does not follow the trials: `m_factor: {p_min: space}` (the smallest network of
the sweep's space, seed 003's definition) or `p_min: <number>`.

Seed 003 (the M-factor paper, eq. 7) takes P_min as "the number of parameters in the smallest model in the
search space". For a sweep over pipeline options this is defined here as: **the network the base pipeline's
frontend builds with every space key that shapes it at the value giving the fewest parameters.**

- The keys that shape it are the model options (not `model.train`) and the data options
  (`SweepSpec.network_params`); the others (seed, evaluate, passes, export, model.train) leave it as it is.
- Each such key must be ordered: numbers (a list of numbers or a range), with the parameter count monotone
  in the value. Each is probed by building the base network at each of its values (a range: at most 9 values,
  evenly spaced on its grid, or on a log scale for a log range), the other keys at the base's values; its
  smallest value is the one with the fewest parameters (the lowest such value on ties).
- The keys are combined on the assumption that their effects on size are separable (one key's smallest value
  does not depend on the others' values), true of kernel sizes, widths and depths. The combined network is
  built once and counted (parameters only: nothing is trained), and must be no larger than any single
  key's smallest build; one that is larger shows that the keys interact, and is refused.

For seed 003's space (9 ResNet blocks' conv1 kernel, each 3, 5 or 7) this is the all-3×3 ResNet.

What cannot be ordered is refused with one line saying to write `p_min: trials` or a number: before anything
is built (`SweepSpec._check_p_min`: a network out of an architecture search, params read after passes, a
choice among non-numbers such as models or genotypes), or here at the sweep's start, before any trial (a
parameter count not monotone in a key, keys that interact).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from compressor.errors import ConfigError
from compressor.sweep.spec import P_MIN_INSTEAD, Param, SweepSpec

MAX_PROBES = 9  # values probed on a range


@dataclass(frozen=True)
class PMin:
    """A resolved P_min: `value` params, from `source` (`space` or `given`); `network`: for `space`, each space
    key that shapes the network at its smallest value."""

    value: int
    source: str
    network: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """`P_min: 68,642 (space: the smallest network of the space, model.kernels.0=3, ...)`."""
        if self.source == "given":
            return f"P_min: {self.value:,} (given)"
        what = compact(self.network) or "the base's network (no space key shapes it)"
        return f"P_min: {self.value:,} (space: the smallest network of the space, {what})"

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "source": self.source, "network": dict(self.network)}

    @classmethod
    def from_dict(cls, raw: Any) -> "PMin | None":
        """A recorded P_min (a study's `p_min` attribute), or None when `raw` is not one."""
        if not isinstance(raw, dict) or set(raw) != {"value", "source", "network"}:
            return None
        value, source, network = raw["value"], raw["source"], raw["network"]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or source not in ("space", "given") \
                or not isinstance(network, dict):
            return None
        return cls(value, source, dict(network))


def compact(values: dict[str, Any]) -> str:
    """`model.kernels.0..8=3, model.width=4`: keys as `k=v`, a run of list indexes with one value as one range."""
    out: list[str] = []
    run: tuple[str, int, int, Any] | None = None  # (prefix, first index, last index, value)
    for key, value in values.items():
        head, _, tail = key.rpartition(".")
        if run is not None and tail.isdigit() and head == run[0] and int(tail) == run[2] + 1 and value == run[3]:
            run = (run[0], run[1], int(tail), value)
            continue
        if run is not None:
            out.append(_run_text(run))
        run = (head, int(tail), int(tail), value) if head and tail.isdigit() else None
        if run is None:
            out.append(f"{key}={value}")
    if run is not None:
        out.append(_run_text(run))
    return ", ".join(out)


def _run_text(run: tuple[str, int, int, Any]) -> str:
    head, first, last, value = run
    return f"{head}.{first}={value}" if first == last else f"{head}.{first}..{last}={value}"


def fixed_p_min(spec: SweepSpec) -> PMin | None:
    """The sweep's fixed P_min (`p_min: space` or a number), resolved once per spec; None for `p_min: trials`."""
    if spec.resolved_p_min is None:
        p_min = spec.m_factor.p_min
        if p_min == "trials":
            return None
        spec.resolved_p_min = PMin(int(p_min), "given") if isinstance(p_min, int) else smallest_network(spec)
    return spec.resolved_p_min


def smallest_network(spec: SweepSpec) -> PMin:
    """Build the smallest network of `spec`'s space (see the module docstring) and count its parameters."""
    counter = _Counter(spec)
    chosen: dict[str, Any] = {}
    single: dict[str, int] = {}
    for p in spec.network_params():
        values = probe_values(p)
        counts = [counter({p.key: v}) for v in values]
        rising = all(a <= b for a, b in zip(counts, counts[1:]))
        falling = all(a >= b for a, b in zip(counts, counts[1:]))
        if not (rising or falling):
            shown = ", ".join(f"{v}: {c:,}" for v, c in zip(values, counts))
            raise ConfigError(f"{p.where}: m_factor.p_min: space: the network's parameter count is not monotone in "
                              f"{p.key} ({shown}), so the space defines no smallest network; {P_MIN_INSTEAD}")
        best = min(range(len(values)), key=lambda i: (counts[i], values[i]))
        chosen[p.key], single[p.key] = values[best], counts[best]
    total = counter(chosen)
    larger = [k for k, c in single.items() if total > c]
    if larger:
        raise ConfigError(f"{spec.source}: m_factor.p_min: space: the keys' effects on size interact (all at their "
                          f"smallest values: {total:,} params, more than {larger[0]} alone at its smallest: "
                          f"{single[larger[0]]:,}), so the space defines no smallest network; {P_MIN_INSTEAD}")
    return PMin(total, "space", chosen)


def probe_values(p: Param) -> list[Any]:
    """The values of a numeric space key that are built, ascending: every value of a list; on a range, every
    value of its grid when there are at most MAX_PROBES, else MAX_PROBES evenly spaced ones (log-spaced for a
    log range; on the step grid when there is a step), both bounds included."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    d = p.distribution
    if isinstance(d, CategoricalDistribution):
        return sorted(p.value(c) for c in d.choices)
    step = d.step if d.step is not None else (1 if isinstance(d, IntDistribution) else None)
    if step is not None:
        n = int(round((d.high - d.low) / step))
        if n + 1 <= MAX_PROBES:
            points = [d.low + i * step for i in range(n + 1)]
        else:
            points = [d.low + round(i * n / (MAX_PROBES - 1)) * step for i in range(MAX_PROBES)]
    elif d.log:
        ratio = math.log(d.high / d.low)
        points = [d.low * math.exp(ratio * i / (MAX_PROBES - 1)) for i in range(MAX_PROBES)]
    else:
        points = [d.low + (d.high - d.low) * i / (MAX_PROBES - 1) for i in range(MAX_PROBES)]
    points[0], points[-1] = d.low, d.high
    if isinstance(d, IntDistribution):
        return sorted({int(v) for v in points})
    return sorted({round(float(v), 12) for v in points})


class _Counter:
    """Parameter count of the base's network with some space keys set: the pipeline validated and its
    frontend built (nothing trained), the data built once per distinct data block and seed."""

    def __init__(self, spec: SweepSpec) -> None:
        self.spec = spec
        self.contexts: dict[str, Any] = {}

    def __call__(self, values: dict[str, Any]) -> int:
        from compressor.pipeline import Pipeline

        doc = self.spec.trial_doc(values, f"{self.spec.name}-smallest")
        try:
            pipeline = Pipeline.from_dict(doc)
        except ConfigError as exc:
            keys = ", ".join(f"{k}={v!r}" for k, v in values.items())
            raise ConfigError(f"{self.spec.source}: m_factor.p_min: space: the network with {keys} is not a valid "
                              f"pipeline ({exc}); {P_MIN_INSTEAD}") from None
        key = json.dumps([doc.get("data"), doc.get("seed")], sort_keys=True, default=str)
        if key not in self.contexts:
            self.contexts[key] = pipeline.context(progress=False)
        ctx = self.contexts[key]
        return pipeline.model.frontend.build(ctx.data, ctx).parameter_count()


__all__ = ["PMin", "compact", "fixed_p_min", "probe_values", "smallest_network"]
