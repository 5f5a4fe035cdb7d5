"""wdrec's HTTP service: a FastAPI app that serves a model bundle (see DESIGN.md, "HTTP API")."""
