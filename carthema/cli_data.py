"""CLI commands for patient data (check-data)."""

from __future__ import annotations
