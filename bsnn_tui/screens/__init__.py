"""Screens: setup (the form), run (live panels), runs (the job dir), help."""
