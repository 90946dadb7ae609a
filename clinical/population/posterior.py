"""The calibrated virtual population as a :class:`~carthema.models.posterior.Posterior`.

A clinical question that takes a fitted patient's posterior (the engraftment window,
:func:`carthema.clinical.window.window_from_fit`) takes draws of the calibrated virtual
population in the same form: :meth:`VirtualPopulation.sample` gives ``n`` virtual
patients of one product and CAR-HEMATOTOX group as parameter vectors (natural scale,
the product's own CAR-T/CRS kinetics), with the product's standard course as events and
no fit behind them (``fit`` is None: no misfit check applies). The patients are drawn by
:func:`carthema.clinical.population.natural_history.sample_patients`, the one function
that draws virtual patients (natural history, the virtual trial, the boost prior's
draws and the benchmarks call it too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from carthema.clinical.population.natural_history import check_disease, sample_patients
from carthema.clinical.population.virtual import (
    load_population,
    population_files,
    population_params,
    product_events,
    product_params,
)
from carthema.models.hematotox import parse_hematotox
from carthema.models.model import get_model
from carthema.models.posterior import Posterior


@dataclass(frozen=True)
class VirtualPopulation:
    """A calibrated virtual population: one row per virtual patient (CAR-HEMATOTOX score,
    laboratory values, every varying parameter under the reference kinetics) and its
    provenance.

    Attributes
    ----------
    frame:
        The population table (:func:`~carthema.clinical.population.virtual.load_population`).
    info:
        Its provenance (how it was calibrated, what it matches).
    disease:
        The disease it was calibrated to.
    source:
        The file it was read from.
    """

    frame: pd.DataFrame
    info: dict
    disease: str
    source: str

    @classmethod
    def load(cls, disease: str = "lbcl", path: str | Path | None = None) -> VirtualPopulation:
        """The population shipped with the package for ``disease`` (or the file ``path``);
        an uncalibrated or unknown disease is refused
        (:func:`~carthema.clinical.population.natural_history.check_disease`)."""
        disease = check_disease(disease, own_population=True)
        frame, info = load_population(path, disease)
        source = str(path) if path is not None else population_files(disease)[0]
        return cls(frame, info, disease, source)

    def sample(
        self,
        n: int,
        seed: int = 0,
        *,
        product: str,
        hematotox: int | str | None = None,
    ) -> Posterior:
        """``n`` virtual patients treated with ``product`` as a :class:`Posterior` of the
        full model.

        Parameters
        ----------
        n:
            Number of draws (virtual patients): a balanced draw of the CAR-HEMATOTOX
            group's rows, without replacement up to the group's size, each row
            ``n // size`` times plus ``n % size`` more beyond it
            (:func:`~carthema.clinical.population.natural_history.sample_patients`).
        seed:
            Seed of the draw.
        product:
            The CAR-T product (``tisa-cel``, ``axi-cel``, ``liso-cel``, ``brexu-cel``): its
            CAR-T/CRS kinetics multiply the population's reference values
            (:func:`~carthema.clinical.population.virtual.product_params`) and its standard
            course in the population's disease (its lymphodepletion, dose on day 0;
            :func:`~carthema.clinical.population.virtual.product_course`) is the events table.
        hematotox:
            CAR-HEMATOTOX score 0-7, or the group ``"low"`` (0-1) or ``"high"`` (>= 2);
            None: every patient.
        """
        if int(n) < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        hematotox = parse_hematotox(hematotox)
        rng = np.random.default_rng(seed)
        rows = sample_patients(self.frame, int(n), rng, product, hematotox, self.disease)
        model = get_model("full")
        # population_params applies each row's product kinetics (its product column).
        draws = population_params(model, rows)
        patient = f"virtual-{product}"
        return Posterior(
            model=model,
            fixed=product_params(model, model.default_params()[None, :], product)[0],
            draws=draws,
            free=(),
            events=product_events(product, patient=patient, disease=self.disease),
            observations=None,
            patient=patient,
            provenance={
                "population": f"{self.source}, {self.disease}",
                "product": product,
                "hematotox": hematotox,
                "seed": int(seed),
            },
        )
