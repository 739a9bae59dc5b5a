"""Rehearsal: release rehearsals as code."""
