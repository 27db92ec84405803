"""bsnn-tui: the live terminal dashboard for bsnn runs.

A consumer of the run's event stream (bsnn.events): every figure it shows comes from
bsnn.summary.summarize, so the dashboard, the CLI and the run folder never disagree.
"""
