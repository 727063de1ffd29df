"""Viewers: the live viser viewer, the static HTML page and previews (contact sheets,
turntables)."""
