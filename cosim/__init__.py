"""Co-simulation of a building fleet and its distribution feeder: scenarios, runs, results.

- ``cosim.scenario``: scenario files and what a run is built from;
- ``cosim.engine``: the engines (mosaik, plain loop), resume, controllers;
- ``cosim.results``: the run directory, KPIs, plots, reports;
- ``cosim.tools``: verify, compare, studies, the demo;
- ``cosim.cli``: the ``cosim`` command.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fleetcosim")
except PackageNotFoundError:  # the sources without an installed distribution
    __version__ = "unknown"

__all__ = ["__version__", "cli", "engine", "results", "scenario", "tools"]
