import sys

from icd.cli import main

sys.exit(main())
