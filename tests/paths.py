"""Where the suite finds the checkout's own files (tests run from a scratch directory)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"
DEFAULT_CONFIG = CONFIGS / "movielens100k.yaml"
