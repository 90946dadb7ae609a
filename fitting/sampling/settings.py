"""How a fit is run (sampler, draws, chains, seed, ...): validated once, shared by the
single-patient, population and cohort fits."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from carthema.data.errors import InputError
from carthema.models.model import COMPONENT_SETS


def _default_cores(chains: int) -> int:
    return max(1, min(chains, os.cpu_count() or 1))


#: The run settings, by name: the same keyword arguments of every fit function
#: (:func:`~carthema.fitting.sampling.samplers.fit`, the population and cohort fits)
#: and of the CLI commands that call them.
RUN_FIELDS = (
    "sampler",
    "draws",
    "tune",
    "chains",
    "seed",
    "cores",
    "init",
    "target_accept",
    "low_rank",
)


def run_args(args: Mapping) -> dict:
    """The run settings among ``args`` (a function's own arguments, ``locals()``), by
    name: what a caller passes on to a fit, and what :meth:`RunSettings.of` validates."""
    return {k: args[k] for k in RUN_FIELDS if k in args}


@dataclass(frozen=True)
class RunSettings:
    """Sampler settings of a fit. Build with :meth:`validated`: it refuses bad values with
    an :class:`InputError` and fills in the seed (drawn, so that it can be recorded) and
    the parallel chains; the fits then use the values as they are.

    ``draws``/``tune``: draws kept and tuning steps per chain (``"map"``: Laplace draws);
    ``init``: ``"map"`` (chains start at Laplace draws around the MAP) or ``"prior"``;
    ``target_accept``, ``low_rank``: NUTS step-size target, nutpie's low-rank mass matrix.
    """

    sampler: str = "nutpie"
    draws: int = 1000
    tune: int = 1000
    chains: int = 4
    seed: int = 0
    cores: int = 1
    init: str = "map"
    target_accept: float = 0.8
    low_rank: bool = True

    @classmethod
    def validated(
        cls,
        samplers: Sequence[str],
        components: str,
        *,
        sampler: str = "nutpie",
        draws: int = 1000,
        tune: int = 1000,
        chains: int = 4,
        seed: int | None = None,
        cores: int | None = None,
        init: str = "map",
        target_accept: float = 0.8,
        low_rank: bool = True,
        what: str = "",
    ) -> RunSettings:
        """Check every setting (``samplers``: those the fit offers; ``what``: the fit's
        name in the message, e.g. " for a population fit") and resolve seed and cores."""
        if sampler not in samplers:
            raise InputError(
                f"unknown sampler '{sampler}'{what}", fix=f"choose one of {', '.join(samplers)}"
            )
        if components not in COMPONENT_SETS:
            raise InputError(
                f"unknown component set '{components}'",
                fix=f"choose one of {', '.join(COMPONENT_SETS)}",
            )
        for name, v in (("draws", draws), ("chains", chains)):
            if int(v) < 1:
                raise InputError(f"{name} must be at least 1, got {v}")
        if int(tune) < 0:
            raise InputError(f"tune must be >= 0, got {tune}")
        if init not in ("map", "prior"):
            raise InputError(f"unknown init '{init}'", fix="use 'map' or 'prior'")
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0] % (2**31))
        return cls(
            sampler=sampler,
            draws=int(draws),
            tune=int(tune),
            chains=int(chains),
            seed=int(seed),
            cores=_default_cores(int(chains)) if cores is None else int(cores),
            init=init,
            target_accept=float(target_accept),
            low_rank=bool(low_rank),
        )

    @classmethod
    def of(
        cls,
        run: RunSettings | None,
        samplers: Sequence[str],
        components: str,
        args: Mapping,
        *,
        what: str = "",
    ) -> RunSettings:
        """The one validation of a fit function's run settings: ``run`` when the caller
        gives one (validated already), else the settings among ``args`` (the fit
        function's own arguments, ``locals()`` at its top; :func:`run_args`) through
        :meth:`validated`."""
        if run is not None:
            return run
        return cls.validated(samplers, components, what=what, **run_args(args))

    def with_seed(self, seed: int) -> RunSettings:
        return replace(self, seed=int(seed))

    def record(self, op) -> dict:
        """How the fit was run, with the solver settings of ``op`` (result and fit.json)."""
        d = asdict(self)
        return {
            "sampler": d["sampler"],
            "draws": d["draws"],
            "tune": d["tune"],
            "chains": d["chains"],
            "seed": d["seed"],
            "cores": d["cores"],
            "init": d["init"],
            "target_accept": d["target_accept"],
            "low_rank": d["low_rank"],
            "rtol": op.rtol,
            "atol": op.atol,
            "method": op.method,
        }
