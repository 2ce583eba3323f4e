"""The API gateway: REST endpoints of every component behind one FastAPI app."""
