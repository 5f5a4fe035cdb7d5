"""wdrec: a Wide&Deep recommender from interaction logs to a live endpoint."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wdrec")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"
