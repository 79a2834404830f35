import sys

from ired_dcd.cli import main

sys.exit(main())
