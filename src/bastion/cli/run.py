"""``bastion run`` / ``make run``: the embedded default — one node with the local journal,
demo markets and a funded demo account, the trading API on 127.0.0.1:8080.

Environment overrides: BASTION_HTTP_PORT, BASTION_DATA, BASTION_DEMO_KEY, BASTION_DEMO_SECRET,
BASTION_ADMIN_TOKEN (see README "Trading API" for the rest).
"""

from bastion.api.config import Settings
from bastion.api.server import serve


def run_embedded() -> None:
    serve(Settings.from_env())
