import sys

from xdpd.cli import main

sys.exit(main())
