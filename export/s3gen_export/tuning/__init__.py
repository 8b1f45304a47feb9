"""Solver tuning on an artifact folder's own graphs: the flow problems and the cheapest setting within a target."""
