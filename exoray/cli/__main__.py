import sys

from exoray.cli.main import main

sys.exit(main())
