"""One module per panel. Each panel draws from a `summarize()` dict and derives no figures."""
