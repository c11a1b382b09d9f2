"""Data helpers shared by dataset builders, InfoGrowth and the demos."""
