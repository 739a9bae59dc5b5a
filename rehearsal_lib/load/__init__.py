"""Load generation for the load phase: an open/closed-model engine on httpx and a Locust driver."""

from rehearsal_lib.load.engine import LoadResult, LoadSpec, Scenario, run_load

__all__ = ["LoadResult", "LoadSpec", "Scenario", "run_load"]
