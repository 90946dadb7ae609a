"""CLI commands for predictions: predict-boost (and, with fits, window)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from carthema import cli_options as opt
from carthema._console import Step, progress_to_stderr, stdout_console
from carthema.data.atomic import write_atomic
from carthema.data.jsonsafe import dumps

console = stdout_console()


def register(app: typer.Typer) -> None:
    """Add the prediction commands to ``app``."""

    @app.command("predict-boost")
    def predict_boost_cmd(
        day: Annotated[float, typer.Option(help="Boost day (days since CAR-T).")],
        dose: opt.Dose,
        source: opt.Source = opt.DEFAULT_SOURCE,
        selected: opt.Selected = opt.DEFAULT_SELECTED,
        cd3: opt.Cd3 = None,
        mnc: opt.Mnc = None,
        anc: Annotated[
            float | None,
            typer.Option(help="ANC on the boost day, G/L (0: below the lab's limit)."),
        ] = None,
        anc_lloq: Annotated[
            float, typer.Option(help="The lab's ANC limit, G/L (for --anc 0).")
        ] = 0.05,
        plt: Annotated[float | None, typer.Option(help="Platelets on the boost day, G/L.")] = None,
        gcsf_since: Annotated[
            float | None,
            typer.Option(
                help="On G-CSF since this day (days since CAR-T) through the boost day: the "
                "ANC is supported, not the patient's own."
            ),
        ] = None,
        gcsf_after: Annotated[
            float,
            typer.Option(help="Days G-CSF continues after the boost day (with --gcsf-since)."),
        ] = 0.0,
        gcsf_dependent: Annotated[
            bool,
            typer.Option(
                "--gcsf-dependent",
                metavar="",
                help="G-CSF dependent: the ANC falls below 0.5 G/L whenever G-CSF stops "
                "(on G-CSF on the boost day; --gcsf-since gives its start).",
            ),
        ] = False,
        plt_transfused: Annotated[
            bool,
            typer.Option(
                "--plt-transfused",
                metavar="",
                help="Platelet-transfusion dependent: --plt is not the patient's own count.",
            ),
        ] = False,
        tpo: Annotated[
            bool, typer.Option("--tpo", metavar="", help="On a TPO-receptor agonist.")
        ] = False,
        neutropenia_days: Annotated[
            float | None, typer.Option(help="Days with ANC < 0.5 G/L before the boost.")
        ] = None,
        product: Annotated[
            str | None, typer.Option(help="CAR-T product: tisa-cel, axi-cel, liso-cel, brexu-cel.")
        ] = None,
        disease: Annotated[
            str,
            typer.Option(
                help="lbcl, b-all or mcl: conditions on that disease's own calibrated population "
                "(mcl: brexu-cel's ZUMA-2 course when no --product)."
            ),
        ] = "lbcl",
        hematotox: opt.Hematotox = None,
        hematotox_labs: Annotated[
            str | None,
            typer.Option(
                help="The five CAR-HEMATOTOX values before lymphodepletion: "
                "PLT,ANC,HB,CRP,FERRITIN (G/L, G/L, g/dL, mg/dL, ng/mL)."
            ),
        ] = None,
        donor_chimerism: Annotated[
            float | None,
            typer.Option(help="Donor fraction (0-1) after an earlier allogeneic transplant."),
        ] = None,
        events: Annotated[
            Path | None,
            typer.Option(
                help="The patient's events (CSV or Parquet); default: the product's course."
            ),
        ] = None,
        obs: Annotated[
            Path | None, typer.Option(help="Earlier observations to condition on.")
        ] = None,
        patient: Annotated[str | None, typer.Option(help="Patient in multi-patient files.")] = None,
        fit: Annotated[
            Path | None,
            typer.Option(
                "--fit",
                help="Fit folder (`carthema fit`): condition that patient's posterior "
                "instead of the population; its events are the course.",
            ),
        ] = None,
        particles: opt.Particles = 2400,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        json_out: opt.Json = None,
    ) -> None:
        """Predict engraftment after a stem-cell boost from the patient's state on the boost
        day (counts, support, neutropenia so far, product, CAR-HEMATOTOX)."""
        check_boost_numbers(
            day=day,
            dose=dose,
            anc=anc,
            anc_lloq=anc_lloq,
            plt=plt,
            gcsf=gcsf_since is not None or gcsf_dependent,
            gcsf_after=gcsf_after,
            neutropenia_days=neutropenia_days,
            hematotox=hematotox,
            cd3=cd3,
            mnc=mnc,
            donor_chimerism=donor_chimerism,
        )  # before any heavy import or the population load: refused in well under 1 s
        graft = opt.graft(dose, source, selected, cd3, mnc, day=day).check()
        from carthema.api import read_events, read_observations
        from carthema.clinical.boost.predict import predict_boost
        from carthema.models.hematotox import parse_hematotox

        labs = _parse_labs(hematotox_labs) if hematotox_labs is not None else None
        ev = _one_patient(read_events(events), events, patient) if events else None
        ob = _one_patient(read_observations(obs), obs, patient) if obs else None
        prior = None
        if fit is not None:
            from carthema.models.posterior import Posterior

            prior = Posterior.from_fit_folder(fit)
        with Step(
            progress_to_stderr,
            "predict-boost: conditioning the calibrated population on the boost-day state",
        ):
            res = predict_boost(
                graft,
                anc=anc,
                anc_lloq=anc_lloq,
                platelets=plt,
                gcsf=gcsf_since is not None or gcsf_dependent,
                gcsf_after=gcsf_after,
                gcsf_dependent=gcsf_dependent,
                gcsf_since=gcsf_since,
                plt_transfused=plt_transfused,
                tpo=tpo,
                neutropenia_days=neutropenia_days,
                product=product,
                disease=disease,
                hematotox=parse_hematotox(hematotox),  # 0-7 (int), "low" or "high"
                hematotox_labs=labs,
                donor_chimerism=donor_chimerism,
                events=ev,
                observations=ob,
                n_draws=particles,
                seed=seed,
                prior=prior,
            )
        _print_prediction(res)
        if json_out is not None:
            write_atomic(json_out, dumps(res), mkdir=True)
            console.print(f"prediction: {json_out}")


def check_boost_numbers(
    *,
    day: float,
    dose: float,
    anc: float | None = None,
    anc_lloq: float = 0.05,
    plt: float | None = None,
    gcsf: bool = False,
    gcsf_after: float = 0.0,
    neutropenia_days: float | None = None,
    hematotox: str | int | None = None,
    cd3: float | None = None,
    mnc: float | None = None,
    donor_chimerism: float | None = None,
) -> None:
    """Refuse predict-boost numbers no patient can have, with the ranges files are
    checked against (:mod:`carthema.data.plausibility`), and combinations that
    contradict each other; one line naming the option and the fix (InputError)."""
    from carthema.data import plausibility as P
    from carthema.data.errors import InputError
    from carthema.models.hematotox import parse_hematotox

    opt.check_graft_numbers(dose, cd3, mnc)
    day_rng = P.Range(0.0, P.BOOST_DAY_LIMIT, "d", 60.0, P.BOOST_DAY_REASON)
    if not math.isfinite(day) or day <= 0:
        raise InputError(f"--day {day:g} is not a day after the CAR-T infusion.",
                         fix="give the boost day counted from the CAR-T infusion (day 0), "
                         "e.g. --day 45.")  # fmt: skip
    P.check_option_value("--day", day, day_rng, what="days after CAR-T")
    units = ("cells/uL", "cells/L")
    P.check_option_value("--anc", anc, P.ANALYTE_RANGES["anc"], candidates=units, what="G/L")
    P.check_option_value("--anc-lloq", anc_lloq, P.ANALYTE_RANGES["anc"], candidates=units)
    P.check_option_value("--plt", plt, P.ANALYTE_RANGES["platelets"], candidates=units, what="G/L")
    days = P.Range(0.0, P.DAY_LIMIT, "d", 7.0, P.DAY_REASON)
    P.check_option_value("--gcsf-after", gcsf_after, days, what="days")
    P.check_option_value("--neutropenia-days", neutropenia_days, days, what="days")
    parse_hematotox(hematotox)  # a score 0-7 or low/high, as in every command
    if donor_chimerism is not None and not (
        math.isfinite(donor_chimerism) and 0.0 <= donor_chimerism <= 1.0
    ):
        pct = 1.0 < donor_chimerism <= 100.0
        raise InputError(
            f"--donor-chimerism {donor_chimerism:g} is not a fraction 0-1.",
            fix=f"did you mean {donor_chimerism / 100:g} ({donor_chimerism:g} %)?"
            if pct
            else "give the donor fraction 0-1 (95 % = 0.95).",
        )
    # A week or more of ANC < 0.5 G/L running up to the boost day (every day since the
    # infusion neutropenic) and an own ANC >= 1 G/L on that day contradict each other.
    if (
        anc is not None
        and neutropenia_days is not None
        and not gcsf
        and anc >= P.RECOVERED_ANC
        and neutropenia_days >= P.NEUTROPENIA_RUN_DAYS
        and neutropenia_days >= day - 1.0
    ):
        raise InputError(
            f"--anc {anc:g} G/L on the boost day (day {day:g}) after --neutropenia-days "
            f"{neutropenia_days:g} with ANC < 0.5 G/L up to that day: a neutropenic run "
            f"ending on the boost day does not give an ANC >= {P.RECOVERED_ANC:g} G/L.",
            fix="add --gcsf-since DAY if the ANC is G-CSF supported; give the number of "
            "neutropenic days that ended before a recovery; or check --anc (G/L, not "
            "cells/uL).",
        )


def _parse_labs(text: str) -> list[float]:
    from carthema.data.errors import InputError

    parts = [p.strip() for p in str(text).split(",")]
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        vals = []
    if len(vals) != 5:
        raise InputError(
            f"cannot read the five CAR-HEMATOTOX values from '{text}'",
            column="hematotox-labs",
            fix="give PLT,ANC,HB,CRP,FERRITIN, e.g. --hematotox-labs 110,0.95,10.1,4.2,540",
        )
    return vals


def _one_patient(df, path, patient):
    from carthema.data.patients import select_patient

    pid = select_patient(df, patient, where="the table", file=str(path))
    return df[df["patient"].astype(str) == pid]


def _print_prediction(res: dict) -> None:
    from rich.table import Table

    from carthema.clinical.decision import predict_boost_line
    from carthema.clinical.plan_text import chimerism_lines

    console.print(predict_boost_line(res), markup=False, style="bold")

    b = res["boost"]
    sel = "CD34-selected" if b["cd34_selected"] else "unselected"
    table = Table(
        title=f"{b['source']} {sel} boost of {b['dose_cd34_per_kg']:.3g} CD34+/kg "
        f"on day {b['day']:g}: days from the boost"
    )
    for col in ("criterion", "already", "median", "5-95%", "P(<=14 d)", "P(<=30 d)", "P(never)"):
        table.add_column(col, justify="right")

    def days(x) -> str:  # None: beyond the horizon (or no draw left to time)
        return "-" if x is None else f"{x:.0f}"

    def pct(x) -> str:
        return "-" if x is None else f"{x:.0%}"

    names = {
        "neutrophil": "ANC > 0.5 G/L x3 d",
        "platelet": "PLT > 20 G/L x3 d",
        "anc_gt_1": "ANC > 1 G/L, no G-CSF",
    }
    for key, label in names.items():
        r = res[key]
        held = r.get("withheld")
        table.add_row(
            label,
            pct(r.get("p_already")),
            "withheld" if held else days(r["median_days"]),
            "withheld" if held else f"{days(r['q05'])}-{days(r['q95'])}",
            pct(r["p_within_14d"]),
            pct(r["p_within_30d"]),
            pct(r["p_never"]),
        )
    console.print(table)
    for key, label in names.items():
        if res[key].get("withheld"):
            console.print(f"{label}: {res[key]['withheld']}", markup=False)
    for line in gcsf_tail_lines(res.get("gcsf_tail")):
        console.print(line, markup=False)
    _print_counterfactual(res)
    for line in chimerism_lines(res):  # a new donor's graft: myeloid and whole blood
        console.print(line)
    if res["boost"].get("p_graft_failure") is not None:
        console.print(
            f"primary graft failure at this dose: {res['boost']['p_graft_failure']:.1%} "
            "(drawn per draw; a failed graft leaves the patient's own course)"
        )
    if res.get("cart_at_boost"):
        c = res["cart_at_boost"]
        console.print(
            f"CAR-T on the boost day: median {c['median']:.3g} copies/ug "
            f"(5-95%: {c['q05']:.3g}-{c['q95']:.3g})"
        )
    inp = res["inputs"]
    prior = inp["conditioning_prior"]
    console.print(
        f"prior: calibrated population, product rows {prior['product_rows']}; "
        f"{prior['hematotox_rows']}; {prior['distinct_patients']} distinct virtual patients"
    )
    if inp["likelihood_terms"]:
        console.print("conditioned on: " + "; ".join(inp["likelihood_terms"]))
    own = res["own_counts_at_boost"]
    sup = inp["support"]
    if sup.get("gcsf_note"):
        console.print(sup["gcsf_note"])
    if sup["gcsf"] or sup["plt_transfused"] or sup["tpo"]:
        console.print(
            f"own counts on the boost day without support: ANC median "
            f"{own['anc']['median']:.2g} G/L, platelets median {own['platelets']['median']:.3g} G/L"
        )
    console.print(
        f"effective sample size {res['effective_sample_size']:.0f} of {res['n_draws']} "
        f"particles ({res['sampler']['stages']} tempering stages, "
        f"{res['wall_time_s']['total']:.1f} s)"
    )
    for w in res["warnings"]:
        console.print(f"[yellow]warning: {w}[/yellow]")


def gcsf_tail_lines(tail: dict | None) -> list[str]:
    """What a neutrophil "engraftment" on the first day off G-CSF means (the
    ``gcsf_tail`` of a prediction on G-CSF): the patient's own count above the threshold
    once G-CSF stops, not the boost's cells; empty when no draw is such."""
    if not tail or not tail.get("p_no_fall_boost"):
        return []
    first = f"day {tail['first_day_off']:g}"
    out = [
        f"On G-CSF on the boost day: in {tail['p_no_fall_boost']:.0%} of draws the ANC is "
        f"above {tail['threshold']:g} G/L from the first day off G-CSF ({first} after the "
        f"boost) and never falls to it afterwards, so by the definition (first of 3 days "
        f"above {tail['threshold']:g} G/L off G-CSF) they engraft on {first}. That is the "
        "patient's own count already above the threshold, not the graft's cells (which "
        "take more than a day to make neutrophils): it is not a boost effect."
    ]
    line = (
        f"  Without the boost, {tail['p_no_fall_both']:.0%} of draws stay above "
        f"{tail['threshold']:g} G/L as well (the boost is not what engrafts them)"
    )
    if tail.get("p_bridged"):
        line += f"; {tail['p_bridged']:.0%} fall below it later"
        if tail.get("bridged_first_fall_no_boost_median") is not None:
            line += f" (median day {tail['bridged_first_fall_no_boost_median']:g})"
        line += ", a fall the boost prevents"
    out.append(line + ".")
    return out


def _print_counterfactual(res: dict) -> None:
    """The same draws without the boost: recovery of the patient's own counts from the
    boost day, and the days of severe cytopenia the boost saves."""
    from rich.table import Table

    if "no_boost" not in res:
        return
    table = Table(title="The same patient without the boost: recovery from the boost day")

    def pct(x) -> str:
        return "-" if x is None else f"{x:.0%}"

    def days(x) -> str:
        return "-" if x is None else f"{x:.0f}"

    for col in ("criterion", "median", "P(<=14 d)", "P(<=30 d)", "P(<=60 d)",
                "P(never), no boost", "P(never), boost"):  # fmt: skip
        table.add_column(col, justify="right")
    sustained = res.get("no_boost_sustained") or {}
    for key, label in (("neutrophil", "ANC > 0.5 G/L"), ("platelet", "PLT > 20 G/L")):
        rows = [(f"{label} x3 d, first", res["no_boost"][key], pct(res["p_never"][key]))]
        if key in sustained:  # above the threshold from then to the horizon
            rows.append((f"{label}, sustained", sustained[key], "-"))
        for name, r, boosted in rows:
            table.add_row(
                name,
                "withheld" if r.get("withheld") else days(r["median_days"]),
                pct(r.get("p_within_14d")),
                pct(r.get("p_within_30d")),
                pct(r.get("p_within_60d")),
                pct(r["p_never"]),
                boosted,
            )
    console.print(table)
    console.print(
        "first: the first 3 days above the threshold off support; sustained: above it from "
        "then to the horizon (a later dip of a biphasic course undoes a first recovery)"
    )
    horizon = res.get("horizon_days_after_boost", 120.0)
    for key, what in (("neutropenia_days_saved", "ANC < 0.5 G/L"),
                      ("thrombocytopenia_days_saved", "platelets < 20 G/L")):  # fmt: skip
        q = res.get(key) or {}
        if q.get("median") is None:
            continue
        console.print(
            f"days with {what} saved by the boost (boost day to +{horizon:g} d, same draws): "
            f"median {q['median']:.0f} (5-95%: {q['q05']:.0f} to {q['q95']:.0f})"
        )


def register_trial(app: typer.Typer) -> None:
    """Add the virtual-trial command to ``app``."""

    @app.command("virtual-trial")
    def virtual_trial_cmd(
        policies: Annotated[
            Path,
            typer.Option(
                help="Policy CSV: name, trigger_day, anc_below, plt_below, boost_day, dose, "
                "source, cd34_selected, cd3_per_kg, mnc_per_kg (the graft as in an events "
                "file; empty: unselected autologous)."
            ),
        ],
        out: Annotated[Path, typer.Option(help="Output folder.")],
        pop: Annotated[
            str,
            typer.Argument(
                help='Virtual patients: "calibrated" (the calibrated LBCL population, each '
                "after its own product's lymphodepletion; default), a population CSV, "
                '"prior" (the fitting priors) or a population-fit JSON '
                '({"mu": {...}, "omega": {...}}).'
            ),
        ] = "calibrated",
        n: Annotated[int, typer.Option(help="Virtual patients.")] = 10_000,
        days: Annotated[float, typer.Option(help="Follow-up (days since CAR-T).")] = 180.0,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        product: Annotated[
            str | None,
            typer.Option(help="Only this product's virtual patients (calibrated population)."),
        ] = None,
        overwrite: opt.Overwrite = False,
    ) -> None:
        """Simulate boost policies on virtual patients; cumulative incidence of recovery."""
        import time

        from carthema.clinical import trial as vt
        from carthema.data.atomic import check_out_folder
        from carthema.data.errors import InputError

        pop_file = None if pop in ("calibrated", "prior") else pop
        check_out_folder(out, "virtual-trial", overwrite=overwrite, inputs=(policies, pop_file))
        pols = vt.read_policies(policies)
        source = vt.trial_source(pop)
        if product is not None:
            if "mu" in source or source["population"] == "prior":
                raise InputError(
                    "--product needs a population with products (calibrated or a CSV)",
                    column="product",
                    fix="drop --product, or use the calibrated population",
                )
            source["product"] = product
        t0 = time.perf_counter()
        with console.status(f"simulating {n} virtual patients x {len(pols)} policies..."):
            res = vt.virtual_trial(pols, n, seed=seed, horizon=days, **source)
        wall = time.perf_counter() - t0
        # The folder replaces ``out`` only once every file is written (whole or absent).
        from carthema.data.runrecord import run_record

        record = run_record([policies], seed=seed, settings={"n": n, "days": days})
        res.save(out, record={**record, "subcommand": "virtual-trial"})
        console.print(res.table())
        console.print(
            f"{n} patients ({res.source}) x {len(pols)} policies in {wall:.1f} s; outputs in {out}"
        )
