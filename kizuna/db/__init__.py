"""Database plumbing shared by every app: the SQLite backend and its writer lock."""
