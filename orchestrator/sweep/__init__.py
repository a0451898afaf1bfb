"""The sweep file: read, expanded and checked as a whole, each section and each hyperparameter."""
