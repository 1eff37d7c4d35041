"""``orch serve``: the local web dashboard (server, live updates, pages, SVG charts)."""
