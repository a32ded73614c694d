import sys

from tmo_runtime.gateway.server import main

sys.exit(main())
