"""Runs Google's REAL ``colab`` client (PyPI ``google-colab-cli``, unedited) against the Colab stand-in.

Run by the client's own Python 3.12 as ``python colab_cli_launcher.py ARGS...`` (the ``colab`` wrapper that
``colab_client.py`` writes does so). Before the client starts, only where it talks to Google is redirected
to ``$COLAB_FAKE_TUN_URL``: the two domains of ``colab_cli.client.Prod`` (Colab's tun API) and Google's OAuth
token endpoint (google-auth's refresh). Everything else, the runtime's Jupyter server included, is reached as
the client reaches it: through the URL that the (fake) assignment hands out.
"""

import os
import sys

TUN = os.environ["COLAB_FAKE_TUN_URL"].rstrip("/")
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"

import colab_cli.client  # noqa: E402
import google.auth.transport.requests as google_requests  # noqa: E402

colab_cli.client.Prod.__init__.__defaults__ = (TUN, TUN)  # Prod(domain=..., api=...)
_call = google_requests.Request.__call__


def _redirected(self, url, *args, **kwargs):  # noqa: ANN001,ANN002,ANN003
    if url.startswith(GOOGLE_TOKEN_URL):
        url = TUN + "/token" + url[len(GOOGLE_TOKEN_URL):]
    return _call(self, url, *args, **kwargs)


google_requests.Request.__call__ = _redirected

from colab_cli.cli import main  # noqa: E402

sys.argv[0] = "colab"
main()
