"""`python -m xdpd`: the `xdpd` command (xdpd.cli)."""
import sys

from xdpd.cli import main

sys.exit(main())
