"""The analyte catalogue: what may be measured, in which unit and compartment.

An observation's ``analyte`` must be one of the names below, spelled exactly (case is
ignored). Values are converted to the analyte's canonical unit on load (see
:mod:`carthema.data.units`); a unit not in ``units`` is refused rather than guessed.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

COMPARTMENTS: tuple[str, ...] = ("blood", "marrow")

# Spellings accepted for blood counts (all mean cells per volume; canonical G/L).
_COUNT_UNITS = ("G/L", "cells/uL", "cells/L")


@dataclass(frozen=True)
class Analyte:
    """One measurable quantity.

    Attributes
    ----------
    name:
        Identifier used in the ``analyte`` column.
    canonical_unit:
        Unit values are stored in after loading.
    units:
        Canonical symbols (see :mod:`carthema.data.units`) a file may use; every alias
        of these symbols is accepted too (``/nL`` for ``G/L``, ``ng/mL`` for ``ug/L``).
    count:
        True for cell counts and copy numbers: a negative value is refused with a
        message saying so. (Every analyte here is non-negative; ``count`` only changes
        the wording.)
    compartments:
        Where it may be measured.
    default_compartment:
        Used when the ``compartment`` cell is empty; None means the user must say
        (CAR-T copies, MRD and chimerism are measured in blood and in marrow, and the
        two differ, so carthema does not pick one).
    upper:
        Largest valid value in the canonical unit (100 for percentages), or None.
    description:
        Plain words, shown by ``check-data`` and in docs.
    synonyms:
        Other names users write; used only to suggest the right name in an error.
    """

    name: str
    canonical_unit: str
    units: tuple[str, ...]
    count: bool
    compartments: tuple[str, ...]
    default_compartment: str | None
    description: str
    upper: float | None = None
    synonyms: tuple[str, ...] = field(default_factory=tuple)


ANALYTES: dict[str, Analyte] = {
    a.name: a
    for a in [
        Analyte(
            "cart_copies",
            "copies/ug DNA",
            ("copies/ug DNA",),
            True,
            COMPARTMENTS,
            None,
            "CAR transgene (vector) copies per microgram genomic DNA, by qPCR",
            synonyms=("cart", "car-t", "car_t", "transgene", "vector copies", "qpcr"),
        ),
        Analyte(
            "anc",
            "G/L",
            _COUNT_UNITS,
            True,
            ("blood",),
            "blood",
            "absolute neutrophil count",
            synonyms=("neutrophils", "neut", "anc_count", "neutrophil"),
        ),
        Analyte(
            "platelets",
            "G/L",
            _COUNT_UNITS,
            True,
            ("blood",),
            "blood",
            "platelet count",
            synonyms=("plt", "platelet", "thrombocytes"),
        ),
        Analyte(
            "lymphocytes",
            "G/L",
            _COUNT_UNITS,
            True,
            ("blood",),
            "blood",
            "absolute lymphocyte count",
            synonyms=("alc", "lymph", "lymphocyte"),
        ),
        Analyte(
            "wbc",
            "G/L",
            _COUNT_UNITS,
            True,
            ("blood",),
            "blood",
            "white blood cell count",
            synonyms=("leukocytes", "white cells", "leucocytes"),
        ),
        Analyte(
            "b_cells",
            "cells/uL",
            _COUNT_UNITS,
            True,
            ("blood",),
            "blood",
            "CD19+ B cells in blood",
            synonyms=("cd19", "cd19+", "b cells", "bcells", "b_cell"),
        ),
        Analyte(
            "marrow_blasts",
            "%",
            ("%",),
            False,
            ("marrow",),
            "marrow",
            "blasts (lymphoblasts + prolymphocytes) in bone-marrow morphology, % of cells",
            upper=100.0,
            synonyms=("blasts", "bm_blasts", "blast"),
        ),
        Analyte(
            "mrd",
            "%",
            ("%",),
            False,
            COMPARTMENTS,
            None,
            "minimal (measurable) residual disease, % of cells (flow cytometry or PCR)",
            upper=100.0,
            synonyms=("minimal residual disease", "fcm_mrd"),
        ),
        Analyte(
            "chimerism",
            "% donor",
            ("% donor",),
            False,
            COMPARTMENTS,
            None,
            "donor chimerism, unsorted (whole blood or whole marrow), % donor",
            upper=100.0,
            synonyms=("donor_chimerism", "chimerism_wb", "donor"),
        ),
        Analyte(
            "chimerism_cd3",
            "% donor",
            ("% donor",),
            False,
            COMPARTMENTS,
            None,
            "donor chimerism in CD3+ T cells, % donor",
            upper=100.0,
            synonyms=("t_cell_chimerism",),
        ),
        Analyte(
            "chimerism_cd15",
            "% donor",
            ("% donor",),
            False,
            COMPARTMENTS,
            None,
            "donor chimerism in CD15+ myeloid cells, % donor",
            upper=100.0,
            synonyms=("myeloid_chimerism",),
        ),
        Analyte(
            "haemoglobin",
            "g/L",
            ("g/L", "g/dL", "mg/dL"),
            False,
            ("blood",),
            "blood",
            "haemoglobin concentration",
            synonyms=("hemoglobin", "hb", "hgb"),
        ),
        Analyte(
            "crp",
            "mg/L",
            ("mg/L", "mg/dL"),
            False,
            ("blood",),
            "blood",
            "C-reactive protein",
            synonyms=("c-reactive protein", "c_reactive_protein"),
        ),
        Analyte(
            "ferritin",
            "ug/L",
            ("ug/L",),
            False,
            ("blood",),
            "blood",
            "serum ferritin (1 ug/L = 1 ng/mL)",
            synonyms=("ferr",),
        ),
        Analyte(
            "il6",
            "pg/mL",
            ("pg/mL",),
            False,
            ("blood",),
            "blood",
            "interleukin-6 (1 pg/mL = 1 ng/L)",
            synonyms=("il-6", "il_6", "interleukin6", "interleukin-6"),
        ),
        Analyte(
            "ldh",
            "U/L",
            ("U/L",),
            False,
            ("blood",),
            "blood",
            "lactate dehydrogenase activity",
            synonyms=("lactate dehydrogenase",),
        ),
    ]
}


def analyte_names() -> list[str]:
    """Names accepted in the ``analyte`` column."""
    return list(ANALYTES)


def get_analyte(name: str) -> Analyte | None:
    """The catalogue entry for ``name`` (case-insensitive), or None."""
    return ANALYTES.get(str(name).strip().lower())


def suggest_analytes(name: str, n: int = 3) -> list[str]:
    """Catalogue names close to an unknown ``name`` (spelling or a known synonym)."""
    key = str(name).strip().lower()
    out: list[str] = []
    for a in ANALYTES.values():
        if key in a.synonyms:
            out.append(a.name)
    pool = {a.name: a.name for a in ANALYTES.values()}
    for a in ANALYTES.values():
        for syn in a.synonyms:
            pool[syn] = a.name
    for close in difflib.get_close_matches(key, list(pool), n=n + 2, cutoff=0.6):
        if pool[close] not in out:
            out.append(pool[close])
    return out[:n]
