"""Heal, factory, evolve and prevent graphs."""
