"""News pipeline: fetch, parse, clean, analyze, classify, store, index, notify."""
