"""CLI commands for the model (simulate, demo)."""

from __future__ import annotations
