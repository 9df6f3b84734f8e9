"""blindspot: find, measure and fix the blind spots of reconstruction-based anomaly detection.

The residual |x - x_hat| between an image and its "healthy" reconstruction is the usual anomaly map;
blindspot measures where that map goes blind (anomaly intensity, texture, reconstruction quality),
trains and evaluates reconstruction models under an explicit, exact protocol.
"""

from importlib.metadata import PackageNotFoundError, version

from blindspot.errors import BlindspotError

try:
    __version__ = version("blindspot")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["BlindspotError", "__version__"]
