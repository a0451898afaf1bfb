"""One invocation of hpo run: the run loop, Ray, the trials' recorder and outcomes, budget and interruption."""
