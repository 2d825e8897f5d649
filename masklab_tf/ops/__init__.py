"""Ops shared by data and model: box conventions, direction geometry, crops."""
