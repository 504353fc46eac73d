"""Loaded as a pytest plugin (-p) before Django reads its settings: gives the test session
its own data directory, so tests never touch ./var."""

import os
import tempfile

os.environ["KIZUNA_DATA_DIR"] = tempfile.mkdtemp(prefix="kizuna-test-")
os.environ.setdefault("KIZUNA_SECRET_KEY", "test-secret-key-not-for-production-0123456789")
os.environ["KIZUNA_EMAIL_URL"] = "capture://"
