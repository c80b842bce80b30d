import sys

from tfchannelprune.cli import main

sys.exit(main())
