"""LightningModules: training and evaluation logic around the plain networks of ``singexp.nn``."""
