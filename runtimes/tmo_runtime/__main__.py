import sys

from tmo_runtime.pod import main

sys.exit(main())
