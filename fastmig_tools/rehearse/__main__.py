"""``python3 -m fastmig_tools.rehearse``: same as ``xend-fastmig rehearse``."""
import sys

from fastmig_tools.rehearse.cli import main

sys.exit(main())
