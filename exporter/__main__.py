"""``python -m exporter``: the same as the ``aliyun-cloudassistant-exporter`` command."""

import sys

from exporter.cli import main

sys.exit(main())
