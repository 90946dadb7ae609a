"""The HTML report is one self-contained file that renders in a real browser."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from carthema.clinical.report import Section, chromium_path, screenshot, write_report


def _figure(path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(np.arange(10), np.arange(10) ** 2)
    fig.savefig(path)
    plt.close(fig)
    return path


def test_report_embeds_figures_and_tables(tmp_path):
    fig = _figure(tmp_path / "f.png")
    table = pd.DataFrame({"boost_day": [30.0, 40.0], "p": [0.5, 0.9]})
    out = write_report(
        tmp_path / "r.html",
        "Patient X",
        ["A <b>lead</b> line."],
        [
            Section(
                "Window", paragraphs=["text"], warnings=["careful"], figures=[fig], tables=[table]
            )
        ],
    )
    text = out.read_text()
    assert "data:image/png;base64," in text and 'src="f.png"' not in text
    assert "&lt;b&gt;lead&lt;/b&gt;" in text  # user text is escaped
    assert "<table" in text and "0.9" in text and "careful" in text


@pytest.mark.slow
@pytest.mark.skipif(
    chromium_path() is None,
    reason="chromium not installed (apt-get install "
    "chromium); the report is still written and checked above",
)
def test_report_renders_in_headless_chromium(tmp_path):
    fig = _figure(tmp_path / "f.png")
    out = write_report(
        tmp_path / "r.html", "Render check", ["lead"], [Section("Figure", figures=[fig])]
    )
    png = screenshot(out, tmp_path / "shot.png", width=800, height=600)
    import matplotlib.image as mpimg

    img = mpimg.imread(png)
    assert img.shape[0] == 600 and img.shape[1] == 800
    # Not blank: the page has dark text and the plot's coloured line.
    assert img[..., :3].min() < 0.3 and img[..., :3].std() > 0.05


# ---------------------------------------------------------------------------------------
# The decision line (issue 20, item 1)
# ---------------------------------------------------------------------------------------
def _summary(sigma_median: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "name": ["hsc_regen", "sigma_platelets"],
            "kind": ["parameter", "residual SD"],
            "median": [0.01, sigma_median],
            "prior_q95": [0.05, 0.588],
        }
    )


def _residuals(last_plt: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "day": [30.0, 40.0, 40.0],
            "analyte": ["platelets", "platelets", "anc"],
            "observed": [25.0, last_plt, 0.3],
            "censored": [False, False, False],
            "limit": [np.nan, np.nan, np.nan],
            "pi05": [10.0, 40.0, 0.1],
            "pi95": [60.0, 200.0, 0.9],
        }
    )


def test_misfit_reasons_name_each_failed_check():
    from carthema.clinical.decision import misfit_reasons

    good = {"pit": {"n": 50, "ks_p": 0.4, "outside_90": 0.1}}
    assert misfit_reasons(good, _summary(0.4), _residuals(50.0)) == []
    bad = misfit_reasons(
        {"pit": {"n": 50, "ks_p": 0.001, "outside_90": 0.13}}, _summary(0.877), _residuals(18.0)
    )
    assert bad == [
        "the residual SD of platelets (0.88) is above its prior's 90 % bound (0.59)",
        "the PIT values are not uniform (KS p = 0.001)",
        "the last platelets (day 40: 18 G/L) is outside the fit's 90 % predictive band "
        "(40-200 G/L)",
    ]
    # A value below the assay limit is outside only when the band's lower end is above it.
    cen = _residuals(18.0).assign(censored=[False, False, True], limit=[np.nan, np.nan, 0.05])
    assert any("last ANC (day 40: < 0.05 G/L)" in r for r in misfit_reasons(good, None, cen))
    cen.loc[2, "pi05"] = 0.01
    assert not any("ANC" in r for r in misfit_reasons(good, None, cen))


def test_misfit_last_count_flags_about_5_percent_of_well_fitted_patients():
    """With the PIT of each last count (residuals.csv), a well-fitted patient (PIT uniform
    on (0, 1) for both counts, independent) is flagged with probability
    1 - (1 - 2 x 0.0125)^2 = 0.0494; the 90 % band alone flagged 1 - 0.9^2 = 0.19."""
    from carthema.clinical.decision import misfit_reasons

    rng = np.random.default_rng(7)
    n = 4000
    flagged = 0
    base = _residuals(50.0)
    for u_plt, u_anc in rng.uniform(size=(n, 2)):
        res = base.assign(pit=[0.5, u_plt, u_anc])
        flagged += bool(misfit_reasons(None, None, res))
    # Binomial SD at p = 0.0494, n = 4000: 0.0034; 4 SD either side.
    assert abs(flagged / n - 0.0494) < 0.014
    far = misfit_reasons(None, None, base.assign(pit=[0.5, 0.004, 0.5]))
    assert far == [
        "the last platelets (day 40: 50 G/L) is in the outer 1.25% of the fit's predictive "
        "distribution (PIT 0.004; 90 % band 40-200 G/L)"
    ]


def test_decision_line_forms():
    from carthema.clinical.decision import decision_line

    days = [40.0, 41.0, 42.0]
    base = {"plan": {"boost_days": days}, "today": 40.0}
    misfit = decision_line({**base, "window": {"recommended_day": 41.0}}, ["reason A", "B"])
    assert misfit == "No recommendation: the model does not describe this patient (reason A; B)."
    # Without h-boost's keys: the scan's median days saved, else "not computed".
    w = {"recommended_day": 41.0, "recommended_p_engraftment": 0.85, "within_days": 30}
    assert decision_line({**base, "window": w}) == (
        "Recommendation: boost on day 41 (P(neutrophil engraftment within 30 d) 85%, "
        "days of ANC < 0.5 G/L saved vs no boost: not computed)."
    )
    w2 = {**w, "recommended_neutropenia_days_saved_median": 6.5}
    assert "saves a median 6 days of ANC < 0.5 G/L vs no boost" in decision_line(
        {**base, "window": w2}
    )
    # The window's block of the recommended day (h-boost's keys) comes first.
    block = {"neutropenia_days_saved": {"median": 9.0, "q05": 2.0, "q95": 15.0}}
    assert decision_line({**base, "window": w2, "recommended": block}).endswith(
        "85%, saves 9 days of ANC < 0.5 G/L vs no boost, 90 % interval 2-15)."
    )
    none = {"recommended_day": None, "days_no_benefit": [41.0, 42.0],
            "first_day_already_recovered": 40.0}  # fmt: skip
    assert decision_line({**base, "window": none}).startswith("Recommendation: no boost needed")
    low = {"recommended_day": None, "threshold": 0.8, "within_days": 30,
           "days_over_cart_limit": [40.0], "cart_limit": 1000.0}  # fmt: skip
    assert decision_line({**base, "window": low}) == (
        "No recommendation: no boost day from day 40 to day 42 meets the criteria (CAR-T "
        "above 1000 copies/ug on 1 of 3 days; P(neutrophil engraftment within 30 d) below "
        "80% on the other days)."
    )


def test_numbers_for_people():
    from carthema.clinical.report import number

    assert [number(v, 2) for v in (9512.4, 590.3, 0.4234, 1.0, np.nan, None)] == [
        "9,500", "590", "0.42", "1", "-", "-",
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------
# The bundled cytopenic patient: no recommendation with the reason, never a past day
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cytopenic(tmp_path_factory):
    import carthema as ct
    from carthema.clinical.window import window_from_fit

    root = tmp_path_factory.mktemp("cytopenic")
    ex = ct.load_example("cytopenic")
    r = ct.fit(ex.observations, ex.events, "cytopenic", sampler="map", draws=200, seed=1)
    r.save(root / "fit")
    res = window_from_fit(root / "fit", None, root / "window", n_draws=40, report=True)
    return root, res


@pytest.mark.slow
def test_cytopenic_patient_gets_no_recommendation_with_the_reason(cytopenic):
    """The issue-20 patient (aplastic on G-CSF to day 40, transfusion-dependent): the
    default scan starts today (its last observation, day 40); the fit misses its
    platelets (residual SD above its prior), so the recommendation is withheld with the
    reason, and the statements below it are conditional on the model."""
    import json

    root, res = cytopenic
    assert res["today"] == 40.0 and min(res["plan"]["boost_days"]) == 40.0
    day = res["window"]["recommended_day"]
    assert day is None or day >= 40.0  # never a past day
    assert res["decision"].startswith(
        "No recommendation: the model does not describe this patient (the residual SD of platelets"
    )
    assert res["summary_lines"][0].startswith("What follows is what the fitted model predicts")
    # Valid JSON (no NaN), and the run record beside it.
    text = (root / "window" / "window.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in window.json"))
    run = json.loads((root / "window" / "run.json").read_text())
    assert run["seed"] == 0 and len(run["inputs"][0]["sha256"]) == 64
    html = (root / "window" / "report.html").read_text()
    assert html.index(res["decision"][:40]) < html.index('id="figure"')
    assert "engraft on day" not in html  # own counts recover; a graft engrafts


# ---------------------------------------------------------------------------------------
# Progress of long steps (issue 20, item 4)
# ---------------------------------------------------------------------------------------
def test_a_long_step_reports_elapsed_time_and_an_estimate_from_its_own_rate():
    import time

    from carthema._console import Step

    lines: list[str] = []
    with Step(lines.append, "quick", grace=0.5):
        pass
    assert lines == []  # a step shorter than its grace says nothing
    with Step(lines.append, "scan", interval=0.05, grace=0.01) as step:
        time.sleep(0.2)  # no work counted yet: elapsed time only, no guessed estimate
        step.update(1, 4)
        time.sleep(0.2)
    assert lines[0] == "scan"
    beats = lines[1:-1]
    assert beats and all("elapsed" in b for b in beats)
    assert not any("left" in b for b in beats if "1/4" not in b)
    assert any(b.startswith("scan: 1/4, ") and "left" in b for b in beats)
    assert lines[-1].startswith("scan: done in ")


def test_verbose_makes_even_a_quick_step_say_it_started_and_ended(monkeypatch):
    from carthema import _console
    from carthema._console import Step

    monkeypatch.setattr(_console, "VERBOSE", True)
    lines: list[str] = []
    with Step(lines.append, "quick", grace=0.5):
        pass
    assert lines[0] == "quick" and lines[-1].startswith("quick: done in ")


def test_window_cli_reports_progress_on_stderr_when_piped(tmp_path):
    """`carthema --verbose window` with stderr to a pipe: the scan's start and end lines
    on stderr (--verbose: however quick the scan), the decision first on stdout."""
    import subprocess
    import sys

    import carthema as ct

    ex = ct.load_example("synthetic")
    r = ct.fit(ex.observations, ex.events, "VP004", sampler="map", draws=30, seed=2)
    r.save(tmp_path / "fit", plot=False)
    code = "import sys; from carthema.cli import main; main(sys.argv[1:])"
    proc = subprocess.run(
        [sys.executable, "-c", code, "--verbose", "window", str(tmp_path / "fit"),
         "--boost-days", "60:90",
         "--step", "5", "--today", "50", "--posterior-draws", "8"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "window scan: 7 boost days x 8 posterior draws" in proc.stderr
    assert "patient VP004: done in " in proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith(("Recommendation:", "No recommendation:")), first


def test_predict_boost_line_renders_the_no_boost_keys_or_says_not_computed():
    from carthema.clinical.decision import predict_boost_line

    res = {
        "boost": {"day": 40.0, "source": "autologous", "cd34_selected": False,
                  "dose_cd34_per_kg": 3e6},
        "neutrophil": {"p_within_30d": 0.85},
    }  # fmt: skip
    assert predict_boost_line(res) == (
        "Prediction for a boost on day 40 (autologous, unselected, 3e+06 CD34+/kg): "
        "P(ANC > 0.5 G/L within 30 d) 85% (no boost: not computed); days of ANC < 0.5 G/L "
        "saved vs no boost: not computed."
    )
    res["no_boost"] = {"neutrophil": {"p_within_30d": 0.2}, "platelet": {"p_within_30d": 0.1}}
    res["neutropenia_days_saved"] = {"median": 12.0, "q05": 4.0, "q95": 19.0}
    assert predict_boost_line(res).endswith(
        "85% (no boost: 20%); saves 12 days of ANC < 0.5 G/L vs no boost, 90 % interval 4-19."
    )


def test_counterfactual_lines_render_h_boost_keys_or_not_computed():
    from carthema.clinical.decision import counterfactual_lines

    bare = counterfactual_lines({"window": {}})
    assert bare == [
        "Days of ANC < 0.5 G/L saved vs no boost: not computed.",
        "Days of platelets < 20 G/L saved vs no boost: not computed.",
        "Without a boost, the share of draws in which neutrophils never recover: not computed.",
        "Without a boost, the share of draws in which platelets never recover: not computed.",
    ]
    full = counterfactual_lines(
        {
            "neutropenia_days_saved": {"median": 12.0, "q05": 4.0, "q95": 19.0},
            "thrombocytopenia_days_saved": {"median": 3.0},
            "no_boost": {"neutrophil": {"p_never": 0.25}, "platelet": {"p_never": 0.5}},
        }
    )
    assert full == [
        "Days of ANC < 0.5 G/L saved vs no boost: median 12 (90 % interval 4-19).",
        "Days of platelets < 20 G/L saved vs no boost: median 3.",
        "Without a boost, neutrophils never recover in 25% of draws.",
        "Without a boost, platelets never recover in 50% of draws.",
    ]
