"""`python -m agent.standin`: run a stand-in kube-apiserver (see `agent.standin.server`)."""

import sys

from agent.standin.server import main

sys.exit(main())
