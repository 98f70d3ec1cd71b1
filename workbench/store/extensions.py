"""Imports the feature modules that add tables, so their migrations register.

Each feature (materials, approvals, traffic, notebooks, ...) defines its tables
next to its code and calls ``schema.register_migration``; listing them here
keeps the order of migrations stable whatever the caller imported first.
"""
from __future__ import annotations

from .. import features

features.load()
