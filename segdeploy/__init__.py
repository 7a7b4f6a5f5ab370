"""segdeploy: export, validate and benchmark efficient semantic-segmentation models."""
from segdeploy.errors import SegdeployError

__version__ = "0.1.0"
__all__ = ["SegdeployError", "__version__"]
