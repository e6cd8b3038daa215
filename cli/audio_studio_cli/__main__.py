"""`python -m audio_studio_cli`: the same as the `audio-studio` console script."""

import sys

from audio_studio_cli.main import main

sys.exit(main())
