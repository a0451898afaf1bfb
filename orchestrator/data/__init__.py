"""The data, prepared once for every trial: read, split, tokenised, the frozen-layer cache, the settings every trial shares."""
