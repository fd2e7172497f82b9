"""Build the sample dataset (if it is missing or stale) and print its folder.

    python -m sqlcopilot_core.sample [OUT_DIR]    # default: sqlcopilot_core.paths.sample_data_dir()
"""

import sys
from pathlib import Path

from sqlcopilot_core.sample import ensure_sample_spider

if __name__ == "__main__":
    if len(sys.argv) > 2 or (len(sys.argv) == 2 and sys.argv[1].startswith("-")):
        sys.exit("usage: python -m sqlcopilot_core.sample [OUT_DIR]")
    target = Path(sys.argv[1]) if len(sys.argv) == 2 else None
    print(ensure_sample_spider(target))
