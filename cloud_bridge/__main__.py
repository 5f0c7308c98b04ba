import sys

from cloud_bridge.cli import main

sys.exit(main())
