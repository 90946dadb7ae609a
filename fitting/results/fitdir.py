"""Read a fit folder written by :meth:`carthema.fitting.FitResult.save`.

A fit folder holds ``posterior.nc`` (ArviZ InferenceData), ``fit.json`` (patient, model,
free parameters, values of the fixed ones, settings, diagnostics), the patient's
``events.csv`` and ``observations.csv``, ``summary.csv``, ``run.json`` and
``ipred.png``. What is read back is what prediction needs: full parameter vectors
(natural scale) for the posterior draws, the events and the observations.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd

from carthema.data.errors import InputError
from carthema.models.model import Model, get_model

#: Files a fit folder must have for prediction.
REQUIRED = ("posterior.nc", "fit.json", "events.csv")


@dataclass
class FitFolder:
    """A saved fit, ready for prediction.

    Attributes
    ----------
    path:
        The folder.
    patient, model, free:
        Who was fitted, with which model, and which parameters were free.
    idata:
        The posterior (ArviZ InferenceData).
    meta:
        Contents of ``fit.json``.
    events, observations:
        The patient's tables (data-layer columns).
    """

    path: Path
    patient: str
    model: Model
    free: tuple[str, ...]
    idata: az.InferenceData
    meta: dict
    events: pd.DataFrame
    observations: pd.DataFrame | None = None
    summary: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def fixed_params(self) -> np.ndarray:
        """Parameter vector with the fit's fixed values (natural scale)."""
        p = self.model.default_params().copy()
        for name, value in self.meta.get("fixed_params", {}).items():
            if name in self.model.param_names:
                p[self.model.index("param", name)] = float(value)
        return p

    @property
    def n_draws(self) -> int:
        post = self.idata.posterior
        return int(post.sizes["chain"] * post.sizes["draw"])

    def draws(self, n: int | None = None, seed: int = 0) -> np.ndarray:
        """Parameter vectors (n, n_params), natural scale, of ``n`` posterior draws picked
        at random without replacement (all draws when ``n`` is None or larger):
        :meth:`carthema.models.posterior.Posterior.sample` of this folder's posterior."""
        from carthema.models.posterior import Posterior

        return Posterior.from_fit_folder(self).sample(n, seed=seed)


#: Significant digits of the numbers in the CSV files a fit writes.
CSV_DIGITS = 6


def write_csv(df: pd.DataFrame, path: str | Path, digits: int = CSV_DIGITS) -> Path:
    """``df`` as CSV for people and programs alike: numbers to ``digits`` significant
    digits, yes/no columns as ``true``/``false``, missing values empty."""
    out = df.copy()
    for col in out.columns:
        s = out[col]
        if s.dtype == bool or (s.dtype == object and s.dropna().map(type).eq(bool).all()
                               and s.notna().any()):  # fmt: skip
            out[col] = s.map(lambda v: "" if v is None or v != v else ("true" if v else "false"))
        elif pd.api.types.is_float_dtype(s):
            out[col] = s.map(lambda v: "" if v != v else float(f"{v:.{digits}g}"))
    out.to_csv(path, index=False)
    return Path(path)


def write_result_folder(
    out: str | Path,
    files: Mapping[str, tuple[str, Callable[[Path], object]]],
    command: str | None = None,
    *,
    record: Mapping | None = None,
) -> dict[str, Path]:
    """Write a result folder whole or not at all: every file under a temporary folder beside
    ``out``, swapped in at the end (:func:`carthema.data.atomic.swap_folder`); whatever
    ``out`` held before is replaced as a whole, so no stale file survives.

    ``files``: key -> (file name, ``writer(path)``), written in order (put a marker file
    last). ``command`` (the CLI command the folder belongs to) and ``record`` (the run
    record, :mod:`carthema.data.runrecord`; one without inputs is made when not given)
    leave its ``run.json``. Returns key -> final path. Used by every fit result's
    ``save``."""
    from carthema.data.atomic import swap_folder
    from carthema.data.runrecord import RUN_JSON, run_record

    out = Path(out)
    record = record if record is not None else run_record()
    with swap_folder(out, command, record=record) as tmp:
        for name, write in files.values():
            write(tmp / name)
    return {"run": out / RUN_JSON, **{key: out / name for key, (name, _) in files.items()}}


def check_fit_out(
    out: str | Path,
    patient: str | None = None,
    *,
    overwrite: bool = False,
    inputs: tuple[str | Path | None, ...] = (),
):
    """Refuse ``--out`` of ``carthema fit`` before any work: the output-folder contract
    (:func:`carthema.data.atomic.check_out_folder`: a file, a folder holding the
    ``inputs``, a place that cannot be written, a non-empty folder that is not a fit
    folder), then a fit folder of another patient than ``patient`` (a refit of the same
    patient replaces its folder as a whole; ``overwrite`` allows any folder but an
    input)."""
    from carthema.data.atomic import check_out_folder

    p = check_out_folder(out, "fit", overwrite=overwrite, inputs=inputs, own_markers=("fit.json",))
    if overwrite or not p.is_dir() or not any(p.iterdir()):
        return p
    again = "choose a new --out folder, or pass --overwrite to replace it as a whole"
    meta_path = p / "fit.json"
    try:
        held = json.loads(meta_path.read_text()).get("patient")
    except (OSError, ValueError, AttributeError):
        raise InputError(
            "the folder exists, is not empty and is not a fit folder", file=str(p), fix=again
        ) from None
    if patient is not None and str(held) != str(patient):
        raise InputError(
            f"the folder holds the fit of patient {held}, not of {patient}",
            file=str(p),
            fix=again,
        )
    return p


def _patients_in(path: Path) -> set[str]:
    try:
        col = pd.read_csv(path, usecols=["patient"], dtype={"patient": str})["patient"]
    except (OSError, ValueError, pd.errors.ParserError):
        return set()
    return set(col.dropna().astype(str))


def check_consistent(path: str | Path) -> dict:
    """Refuse a fit folder whose parts disagree: fit.json's patient against the patients
    of observations.csv and events.csv and the patient recorded in posterior.nc, and a
    posterior.nc that cannot be read (truncated, or not NetCDF). Returns fit.json."""
    path = Path(path)
    refit = (
        "the folder mixes files of different fits; refit the patient into a new folder with "
        "`carthema fit OBS --events EVENTS --patient ID --out DIR`"
    )
    meta_path = path / "fit.json"
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(
            f"fit.json is not valid JSON ({exc.msg}, line {exc.lineno})",
            file=str(meta_path),
            fix=refit,
        ) from None
    if not isinstance(meta, dict) or "patient" not in meta:
        raise InputError("fit.json has no 'patient'", file=str(meta_path), fix=refit)
    patient = str(meta["patient"])
    for name in ("observations.csv", "events.csv"):
        f = path / name
        if not f.exists():
            continue
        ids = _patients_in(f)
        if ids and ids != {patient}:
            raise InputError(
                f"{name} holds patient(s) {', '.join(sorted(ids)[:5])}, but fit.json is the "
                f"fit of patient {patient}",
                file=str(f),
                column="patient",
                fix=refit,
            )
    post_path = path / "posterior.nc"
    try:
        import xarray as xr

        with xr.open_dataset(post_path, group="posterior") as ds:
            held = ds.attrs.get("carthema_patient")
    except Exception as exc:  # noqa: BLE001 - any failure to read is a broken file
        raise InputError(
            f"posterior.nc cannot be read (truncated or not NetCDF: {type(exc).__name__})",
            file=str(post_path),
            fix="refit the patient: `carthema fit OBS --events EVENTS --patient ID --out DIR`",
        ) from None
    if held is not None and str(held) != patient:
        raise InputError(
            f"posterior.nc is the posterior of patient {held}, but fit.json is the fit of "
            f"patient {patient}",
            file=str(post_path),
            fix=refit,
        )
    return meta


def read_residuals(path: str | Path) -> pd.DataFrame | None:
    """A fit folder's ``residuals.csv`` (one row per observation: PRED, IPRED, 90 %
    predictive interval, PIT); None where it is missing or cannot be read (an older
    fit): the misfit check then goes without it."""
    file = Path(path) / "residuals.csv"
    try:
        return pd.read_csv(file) if file.exists() else None
    except (OSError, ValueError, pd.errors.ParserError):
        return None


def load_fit(path: str | Path) -> FitFolder:
    """Read a fit folder; refuses a folder that is missing, incomplete, of another
    format or whose parts disagree (:func:`check_consistent`) with an
    :class:`InputError` that says how to make one."""
    path = Path(path)
    make = "write one with `carthema fit OBS --events EVENTS --patient ID --out DIR`"
    if not path.is_dir():
        raise InputError("fit folder not found", file=str(path), fix=make)
    for name in REQUIRED:
        if not (path / name).exists():
            raise InputError(
                f"the fit folder has no {name} (an unfinished or older fit?)",
                file=str(path / name),
                fix=make,
            )
    meta = check_consistent(path)
    for key in ("patient", "components", "free"):
        if key not in meta:
            raise InputError(f"fit.json has no '{key}'", file=str(path / "fit.json"), fix=make)
    model = get_model(meta["components"])
    try:
        idata = az.from_netcdf(str(path / "posterior.nc"))
    except Exception as exc:  # noqa: BLE001 - any failure to read is a broken file
        raise InputError(
            f"posterior.nc cannot be read ({type(exc).__name__})",
            file=str(path / "posterior.nc"),
            fix=make,
        ) from None
    if "log_params" not in idata.posterior:
        raise InputError(
            "posterior.nc has no log_params", file=str(path / "posterior.nc"), fix=make
        )
    from carthema.data.loaders import read_events, read_observations

    events = read_events(path / "events.csv")
    obs_path = path / "observations.csv"
    observations = read_observations(obs_path) if obs_path.exists() else None
    summary_path = path / "summary.csv"
    summary = pd.read_csv(summary_path) if summary_path.exists() else None
    return FitFolder(
        path=path,
        patient=str(meta["patient"]),
        model=model,
        free=tuple(meta["free"]),
        idata=idata,
        meta=meta,
        events=events,
        observations=observations,
        summary=summary,
        notes=list(meta.get("notes", [])),
    )
