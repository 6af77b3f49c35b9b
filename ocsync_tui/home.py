"""Where a device keeps its state: --home, then $OCSYNC_HOME, then the user's data directory."""

import os
from pathlib import Path

import platformdirs

HOME_ENV = "OCSYNC_HOME"


def resolve_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        chosen = Path(explicit)
    elif os.environ.get(HOME_ENV):
        chosen = Path(os.environ[HOME_ENV])
    else:
        chosen = Path(platformdirs.user_data_dir("ocsync", appauthor=False))
    return chosen.expanduser().absolute()


def ensure_home(home: Path) -> Path:
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    return home
