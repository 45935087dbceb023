"""`python -m agent.standin`: run a stand-in kube-apiserver (see `agent.standin.server`)."""

import sys

from agent.standin.process import main

sys.exit(main())
