"""The sweep's answer: the top configurations confirmed with new seeds, the chosen one scored on test."""
