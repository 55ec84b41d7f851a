"""``python -m devstack.host --app-root . --settings-file local.settings.json``."""

import sys

from devstack.host.app import main

sys.exit(main())
