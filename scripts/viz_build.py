"""Build the static Kedro-Viz site of the project in the current folder into ``build/``.

``kedro viz build --include-previews`` writes every API response the Kedro-Viz app reads
except ``api/metadata``; without it the app logs a console error on load.  This writes that
response with Kedro-Viz's own model after the build, so the site is complete.

    .venv/bin/python scripts/viz_build.py      # (make viz-build)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kedro_viz.api.rest.responses.metadata import MetadataAPIResponse, get_metadata_response
from kedro_viz.models.metadata import Metadata

from ieu_potion.io import atomic_write_text


def main() -> None:
    subprocess.run(
        [sys.executable, "-m", "kedro", "viz", "build", "--include-previews"], check=True
    )
    get_metadata_response()  # fills Metadata's package compatibilities
    response = MetadataAPIResponse(
        has_missing_dependencies=Metadata.has_missing_dependencies,
        package_compatibilities=Metadata.package_compatibilities,
    )
    atomic_write_text(Path("build/api/metadata"), response.model_dump_json())


if __name__ == "__main__":
    main()
