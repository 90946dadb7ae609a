"""carthema: compartment ODE models after CD19 CAR-T cell therapy."""

from __future__ import annotations

__version__ = "0.1.0"
