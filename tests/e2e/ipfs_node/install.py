"""Install the test IPFS node's npm packages (helia, @helia/unixfs) with the wheel's Node.js.

python tests/e2e/ipfs_node/install.py          # npm ci, unless node_modules is current
python tests/e2e/ipfs_node/install.py --force  # reinstall
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # run as a script: the repository

from tests.e2e.npm_packages import main

if __name__ == "__main__":
    main(Path(__file__).resolve().parent)
