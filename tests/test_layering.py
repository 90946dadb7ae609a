"""The package layering: the clinical questions load no PyMC, PyTensor or nutpie."""

import subprocess
import sys

import pytest

HEAVY = ("pymc", "pytensor", "nutpie", "numpyro")

CHECK = """
import sys
{body}
print("LOADED:" + ",".join(m for m in {heavy!r} if m in sys.modules))
"""


def _loaded(body: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", CHECK.format(body=body, heavy=HEAVY)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (line,) = [s for s in out.splitlines() if s.startswith("LOADED:")]
    return [m for m in line.removeprefix("LOADED:").split(",") if m]


def test_clinical_package_imports_no_sampler_stack():
    body = "\n".join(
        f"import carthema.clinical.{m}"
        for m in (
            "endpoints",
            "plans",
            "window",
            "trial",
            "sensitivity",
            "report",
            "boost.predict",
            "boost.calibration",
            "population.virtual",
            "population.graft",
            "population.calibrate",
            "population.natural_history",
            "population.statistics",
            "population.icaht",
            "population.posterior",
        )
    )
    assert _loaded(body) == []


def test_fitting_priors_alone_imports_no_pymc():
    # carthema.fitting's __init__ is lazy, so a PyMC-free submodule stays PyMC-free.
    assert _loaded("import carthema.fitting.priors") == []


@pytest.mark.parametrize("command", ["predict-boost", "natural-history", "icaht"])
def test_clinical_commands_help_loads_no_pymc(command):
    body = (
        "from carthema.cli import main\n"
        f"try:\n    main([{command!r}, '--help'])\nexcept SystemExit:\n    pass"
    )
    assert _loaded(body) == []


def test_fitting_really_loads_pymc():
    # The check above can fail: the fit entry point does pull in PyMC.
    assert "pymc" in _loaded("from carthema.fitting import fit")
