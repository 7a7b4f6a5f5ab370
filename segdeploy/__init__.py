"""segdeploy: export, validate and benchmark efficient semantic-segmentation models."""
from segdeploy.errors import SegdeployError


def _version() -> str:
    """The version pip installed (the distribution's metadata, so it cannot drift from pyproject.toml); in a source
    tree that was never installed, the version its pyproject.toml declares."""
    from importlib import metadata

    try:
        return metadata.version("segdeploy")
    except metadata.PackageNotFoundError:
        pass
    import os
    import re

    pyproject = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyproject.toml")
    try:
        with open(pyproject, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return "0+unknown"
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, flags=re.M | re.S)
    if project and re.search(r'^name\s*=\s*"segdeploy"', project.group(1), flags=re.M):
        found = re.search(r'^version\s*=\s*"([^"]+)"', project.group(1), flags=re.M)
        if found:
            return found.group(1)
    return "0+unknown"


__version__ = _version()
__all__ = ["SegdeployError", "__version__"]
