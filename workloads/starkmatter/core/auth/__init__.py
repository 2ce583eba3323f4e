"""Authentication: password hashing, JWT access tokens, revocable sessions, rate limits."""
