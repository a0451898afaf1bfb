"""The search space and who searches it: parameters, samplers, schedulers, the searcher Ray Tune asks."""
