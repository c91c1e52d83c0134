"""Poison unlearning (Potion): importances, dampening, the PTN search, the methods."""
