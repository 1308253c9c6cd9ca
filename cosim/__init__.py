"""Co-simulation of a building fleet and its distribution feeder: scenarios, runs, results."""
