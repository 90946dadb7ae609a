"""Cohort fits on dask.distributed: local cluster, external scheduler, resume, failures.

The cluster tests fit the small ``cart`` component set with the MAP sampler (seconds per
patient) and are marked slow; the helpers (seeds, folder names, what counts as done, the
settings check) are tested without a cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd
import pytest

from carthema.data import load_example
from carthema.data.errors import InputError
from carthema.fitting.cohort import (
    fit_cohort,
    patient_folder,
    patient_seed,
    patient_state,
)

PATIENTS = ["VP001", "VP002", "VP003"]
#: Fast settings shared by the cluster tests (so their results can be compared).
SETTINGS = {"components": "cart", "sampler": "map", "draws": 50, "seed": 3}
CLI_SETTINGS = ["--components", "cart", "--sampler", "map", "--draws", "50", "--seed", "3"]
REPO = Path(__file__).resolve().parents[1]
PATIENT_FILES = (
    "posterior.nc",
    "fit.json",
    "events.csv",
    "observations.csv",
    "summary.csv",
    "priors.csv",
    "report.txt",
    "done.json",
)


@pytest.fixture(scope="module")
def synthetic():
    return load_example("synthetic")


# ---------------------------------------------------------------------------------
# Helpers (no cluster)
# ---------------------------------------------------------------------------------
def test_patient_seed_is_deterministic_and_per_patient():
    # A resumed cohort must re-derive the seeds of an earlier run, in another process and
    # another carthema version: pinned values (SHA-256 of "carthema-cohort:3:VP001", first
    # 8 bytes little-endian, mod 2**31), and a fresh interpreter with another hash seed.
    assert patient_seed(3, "VP001") == 1079072830
    assert patient_seed(3, "VP002") == 1335002224
    code = "from carthema.fitting.cohort import patient_seed; print(patient_seed(3, 'VP001'))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert fresh.stdout.strip() == "1079072830", fresh.stderr
    seeds = {patient_seed(3, p) for p in PATIENTS}
    assert len(seeds) == 3
    assert patient_seed(4, "VP001") != patient_seed(3, "VP001")
    assert all(0 <= s < 2**31 for s in seeds)


def test_patient_folder_names_are_safe_and_distinct():
    assert patient_folder("VP001") == "VP001"
    a, b = patient_folder("a/b"), patient_folder("a_b")
    assert "/" not in a and a != b
    assert patient_folder("..") not in ("..", ".", "")


def _write_done(pdir: Path, files: dict[str, bytes]) -> None:
    pdir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (pdir / name).write_bytes(data)
    marker = {
        "patient": pdir.name,
        "status": "ok",
        "files": {n: len(d) for n, d in files.items()},
        "row": {"patient": pdir.name, "status": "ok"},
    }
    (pdir / "done.json").write_text(json.dumps(marker))


def test_what_counts_as_done(tmp_path):
    ok = tmp_path / "ok"
    _write_done(ok, {"posterior.nc": b"x" * 10, "summary.csv": b"a,b\n"})
    assert patient_state(ok)[0] == "done"

    # Files without a marker, or only temporary files: not done.
    nomarker = tmp_path / "nomarker"
    nomarker.mkdir()
    (nomarker / "posterior.nc").write_bytes(b"x" * 10)
    (nomarker / ".posterior.nc.tmp-123").write_bytes(b"half")
    assert patient_state(nomarker) == ("missing", None)

    # A truncated marker: not done.
    truncated = tmp_path / "truncated"
    _write_done(truncated, {"posterior.nc": b"x" * 10})
    text = (truncated / "done.json").read_text()
    (truncated / "done.json").write_text(text[: len(text) // 2])
    assert patient_state(truncated)[0] == "missing"

    # A listed file missing or of another size: not done.
    resized = tmp_path / "resized"
    _write_done(resized, {"posterior.nc": b"x" * 10})
    (resized / "posterior.nc").write_bytes(b"x" * 5)
    assert patient_state(resized)[0] == "missing"
    gone = tmp_path / "gone"
    _write_done(gone, {"posterior.nc": b"x" * 10})
    (gone / "posterior.nc").unlink()
    assert patient_state(gone)[0] == "missing"

    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "failed.json").write_text(
        json.dumps({"status": "failed", "row": {"patient": "failed", "status": "failed"}})
    )
    assert patient_state(failed)[0] == "failed"


def test_refuses_other_settings_in_the_same_folder(tmp_path, synthetic):
    manifest = {"settings": {**SETTINGS, "free": None, "tune": 1000, "chains": 4}}
    manifest["settings"].update({"init": "map", "fit_options": {}, "components": "full"})
    (tmp_path / "cohort.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="other settings.*components"):
        fit_cohort(synthetic.observations, synthetic.events, tmp_path, **SETTINGS)


def test_unknown_patient_and_workers_with_scheduler_are_refused(tmp_path, synthetic):
    obs, ev = synthetic.observations, synthetic.events
    with pytest.raises(InputError, match="'NOPE' not in the observations"):
        fit_cohort(obs, ev, tmp_path, patients=["NOPE"], **SETTINGS)
    with pytest.raises(InputError, match="--workers applies to the local cluster"):
        fit_cohort(obs, ev, tmp_path, scheduler="tcp://127.0.0.1:1", workers=2, **SETTINGS)


# ---------------------------------------------------------------------------------
# (a) LocalCluster, 2 worker processes
# ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_run(tmp_path_factory, synthetic):
    out = tmp_path_factory.mktemp("cohort_local")
    lines: list[str] = []
    res = fit_cohort(
        synthetic.observations,
        synthetic.events,
        out,
        patients=PATIENTS,
        workers=2,
        truth=synthetic.tables["parameters"],
        log=lines.append,
        **SETTINGS,
    )
    return out, res, lines


def _check_patient_files(out: Path, pid: str) -> None:
    pdir = out / "patients" / pid
    for name in PATIENT_FILES:
        assert (pdir / name).is_file(), f"{pid}: {name} missing"
    assert not list(pdir.glob("*.tmp-*")) and not list(pdir.glob(".*tmp-*"))
    assert patient_state(pdir)[0] == "done"
    idata = az.from_netcdf(pdir / "posterior.nc")
    assert idata.posterior.attrs["carthema_patient"] == pid
    assert "cart_rho" in list(idata.posterior["param"].values)


@pytest.mark.slow
def test_local_cluster_fits_every_patient(local_run):
    out, res, lines = local_run
    assert res.ok and res.fitted and sorted(res.fitted) == PATIENTS and not res.skipped
    assert res.timings["workers"] == 2
    for pid in PATIENTS:
        _check_patient_files(out, pid)
    for name in ("cohort.parquet", "cohort.csv", "cohort.json", "vpc.png"):
        assert (out / name).is_file()
    # the pooled prediction-corrected VPC: every used observation of the 3 patients once
    vpc = pd.read_csv(out / "vpc.csv")
    n_used = sum(json.loads((out / "patients" / p / "fit.json").read_text())["criteria"][
        "n_observations"] for p in PATIENTS)  # fmt: skip
    assert vpc["n_obs"].sum() == n_used and (vpc["sim_p50_q05"] <= vpc["sim_p50_q95"]).all()
    assert any("prediction-corrected VPC of 3 patients" in line for line in lines)
    table = pd.read_parquet(out / "cohort.parquet")
    csv = pd.read_csv(out / "cohort.csv")
    assert list(table["patient"]) == PATIENTS == list(csv["patient"])
    assert (table["status"] == "ok").all()
    for col in ("error", "max_rhat", "min_ess_bulk", "divergences", "wall_s", "warnings"):
        assert col in table.columns
    for p in ("cart_rho", "cart_alpha", "cart_fb", "cart_beta", "cart_f_dose"):
        for q in ("median", "q05", "q95", "true"):
            assert f"{p}_{q}" in table.columns
        assert (table[f"{p}_q05"] <= table[f"{p}_median"]).all()
        assert (table[f"{p}_median"] <= table[f"{p}_q95"]).all()
    assert list(table["seed"]) == [patient_seed(3, p) for p in PATIENTS]
    assert (table["wall_s"] > 0).all()
    assert json.loads((out / "cohort.json").read_text())["settings"]["seed"] == 3
    assert any("[3/3]" in line for line in lines)
    # Each patient folder is a fit folder that prediction can read.
    from carthema.fitting.fitdir import load_fit

    fitted = load_fit(out / "patients" / "VP002")
    assert fitted.patient == "VP002" and "cart_rho" in fitted.free
    # Each worker fitted with one thread, in processes other than this one.
    assert all(not w.endswith(f":{os.getpid()}") for w in table["worker"])


# ---------------------------------------------------------------------------------
# (d) a failing patient is recorded and the others succeed; a restart retries it
# ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_failed_patient_is_recorded_and_retried(tmp_path, synthetic):
    from distributed import Client, LocalCluster

    obs, ev = synthetic.observations, synthetic.events
    # VP002 loses its CAR-T measurements: nothing left that the 'cart' model can fit.
    bad_obs = obs[~((obs["patient"] == "VP002") & (obs["analyte"] == "cart_copies"))]
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        res = fit_cohort(
            bad_obs, ev, tmp_path, patients=["VP001", "VP002"], scheduler=client, **SETTINGS
        )
        assert res.failed == ["VP002"] and res.fitted == ["VP001"] and not res.ok
        table = pd.read_parquet(tmp_path / "cohort.parquet")
        row = table.set_index("patient").loc["VP002"]
        assert row["status"] == "failed"
        assert "has no observations the 'cart' model can use" in row["error"]
        bad = tmp_path / "patients" / "VP002"
        assert (bad / "error.txt").is_file() and (bad / "failed.json").is_file()
        assert "InputError" in (bad / "error.txt").read_text()  # with the traceback
        assert not (bad / "done.json").exists()
        assert patient_state(bad)[0] == "failed"
        _check_patient_files(tmp_path, "VP001")

        # Restart with the data fixed: only the failed patient is fitted again.
        res2 = fit_cohort(
            obs, ev, tmp_path, patients=["VP001", "VP002"], scheduler=client, **SETTINGS
        )
    assert res2.fitted == ["VP002"] and res2.skipped == ["VP001"] and res2.ok
    assert not (bad / "error.txt").exists() and not (bad / "failed.json").exists()
    _check_patient_files(tmp_path, "VP002")
    table = pd.read_parquet(tmp_path / "cohort.parquet")
    assert list(table["status"]) == ["ok", "ok"]


# ---------------------------------------------------------------------------------
# (b) an external scheduler and worker on loopback
# ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it has not exited."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
    else:  # the leader exited; its children (e.g. a nanny's worker) may not have
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def _dask(*args: str, log: Path) -> subprocess.Popen:
    with open(log, "wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_" + args[0], *args[1:]],
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=REPO,
        )


@pytest.mark.slow
def test_external_scheduler(tmp_path, capsys):
    from carthema.cli import main

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = []
    try:
        procs.append(
            _dask(
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
                log=tmp_path / "scheduler.log",
            )
        )
        procs.append(
            _dask(
                "worker",
                address,
                "--nthreads",
                "1",
                "--nworkers",
                "1",
                "--no-dashboard",
                "--host",
                "127.0.0.1",
                log=tmp_path / "worker.log",
            )
        )
        out = tmp_path / "out"
        argv = ["fit-cohort", "example:synthetic", "--out", str(out), "--scheduler", address]
        argv += ["--patients", "VP004,VP005", *CLI_SETTINGS]
        with pytest.raises(SystemExit) as exc:
            main(argv)
        text = capsys.readouterr().out
        assert exc.value.code == 0, text
    finally:
        for p in reversed(procs):
            _stop(p)
    assert f"the dask scheduler at {address}" in text
    assert "wrote table" in text and "cohort.parquet" in text
    table = pd.read_parquet(out / "cohort.parquet")
    assert list(table["patient"]) == ["VP004", "VP005"]
    assert (table["status"] == "ok").all()
    for pid in ("VP004", "VP005"):
        _check_patient_files(out, pid)


@pytest.mark.slow
def test_unreachable_scheduler_is_an_input_error(tmp_path, capsys, monkeypatch):
    from carthema.cli import main
    from carthema.fitting.workflows import cluster

    # the connect timeout lives with the dask cluster since the cohort split
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", "2s")

    argv = ["fit-cohort", "example:synthetic", "--out", str(tmp_path / "o"), "--patients"]
    argv += ["VP001", "--scheduler", f"tcp://127.0.0.1:{_free_port()}", *CLI_SETTINGS]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "cannot reach the dask scheduler" in capsys.readouterr().err


# ---------------------------------------------------------------------------------
# (c) kill a running cohort, restart it
# ---------------------------------------------------------------------------------
#: Patients of the kill-and-resume test: the first is done before the kill.
RESUME = PATIENTS[:2]


def _cli(out: Path, log: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "carthema.cli", "fit-cohort", "example:synthetic"]
    argv += ["--out", str(out), "--workers", "1", "--patients", ",".join(RESUME)]
    with open(log, "wb") as fh:
        return subprocess.Popen(
            [*argv, *CLI_SETTINGS],
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=REPO,
        )


@pytest.mark.slow
def test_killed_cohort_resumes(tmp_path, local_run):
    out = tmp_path / "out"
    log1 = tmp_path / "run1.log"
    proc = _cli(out, log1)
    try:
        # Wait for the first finished patient, then kill at once. The limit is only a hang
        # guard (a fit here takes seconds); the assertions below do not depend on speed.
        hang_guard = time.monotonic() + 1200
        while not list(out.glob("patients/*/done.json")):
            assert proc.poll() is None, log1.read_text()
            if time.monotonic() > hang_guard:
                pytest.fail("fit-cohort seems hung: no patient finished in 20 minutes")
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    done = [p for p in RESUME if patient_state(out / "patients" / p)[0] == "done"]
    assert 1 <= len(done) < len(RESUME), "the kill came too late to test resuming"
    todo = [p for p in RESUME if p not in done]
    for p in todo:  # a folder without a valid marker never counts as done
        assert not (out / "patients" / p / "done.json").exists()
    # Leave half-written files behind in a patient that is not done: a temporary file, a
    # partial final file and a truncated marker.
    junk = out / "patients" / todo[-1]
    junk.mkdir(parents=True, exist_ok=True)
    (junk / ".posterior.nc.tmp-99999").write_bytes(b"half-written")
    (junk / "posterior.nc").write_bytes(b"not a netcdf file")
    marker = json.dumps({"patient": todo[-1], "status": "ok", "files": {"posterior.nc": 17}})
    (junk / "done.json").write_text(marker[: len(marker) // 2])
    assert patient_state(junk)[0] == "missing"
    stamps = {p: (out / "patients" / p / "posterior.nc").stat().st_mtime_ns for p in done}

    log2 = tmp_path / "run2.log"
    proc = _cli(out, log2)
    try:
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    text = log2.read_text()
    assert rc == 0, text
    assert f"{len(done)} already done, {len(todo)} to fit" in text
    for p in todo:
        assert f"{p}: ok" in text
    for p in done:  # not fitted again
        assert f"{p}: ok" not in text
        assert (out / "patients" / p / "posterior.nc").stat().st_mtime_ns == stamps[p]
    for p in RESUME:
        _check_patient_files(out, p)
    assert not (junk / ".posterior.nc.tmp-99999").exists()

    table = pd.read_parquet(out / "cohort.parquet")
    assert list(table["patient"]) == RESUME and (table["status"] == "ok").all()
    # Same seed and settings as the uninterrupted run of test (a): same results.
    ref = local_run[1].table.set_index("patient").loc[RESUME]
    got = table.set_index("patient")
    for col in ("seed", "cart_rho_median", "cart_alpha_q05", "cart_f_dose_q95"):
        np.testing.assert_allclose(got[col].to_numpy(float), ref[col].to_numpy(float), rtol=1e-6)
