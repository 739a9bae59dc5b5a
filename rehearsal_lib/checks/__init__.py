"""Check families per phase; each function returns an Outcome for PhaseRun.run."""
