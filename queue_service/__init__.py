"""Gelombang queue service: a virtual waiting room for registration wave openings."""

from __future__ import annotations

__version__ = "0.1.0"
