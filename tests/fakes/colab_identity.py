"""Loaded BY the test runtime's jupyter_server: accept Colab's runtime proxy token as the server token.

On Colab, clients reach the runtime's Jupyter server through Colab's proxy, which checks the runtime proxy
token: cgpu sends it as the header ``X-Colab-Runtime-Proxy-Token`` (cgpu's ``src/colab/headers.ts``), Google's
``colab`` client as the query parameter ``colab-runtime-proxy-token`` on contents calls and as both on kernel
calls. A stock jupyter_server reads its token from ``?token=`` or ``Authorization: token ...`` only, so this
provider also reads those, and is otherwise jupyter_server's own (hidden paths refused, xsrf checks as usual).

When ``$CGPU_TEST_PROXY_TOKENS`` names a file, only the tokens listed in it (one a line) are valid, as only the
tokens of live assignments are for Colab's proxy: a request with any other proxy token is answered 404, as
the proxy answers for a runtime that is gone (the tun fake rewrites the file when it recycles the runtime).
"""

from __future__ import annotations

import os

from jupyter_server.auth.identity import IdentityProvider
from tornado import web

HEADER = "X-Colab-Runtime-Proxy-Token"
QUERY = "colab-runtime-proxy-token"


def _valid_tokens() -> set[str] | None:
    path = os.environ.get("CGPU_TEST_PROXY_TOKENS")
    if not path:
        return None
    try:
        with open(path) as f:
            return {line.strip() for line in f if line.strip()}
    except OSError:
        return set()


class ColabProxyIdentityProvider(IdentityProvider):
    def get_token(self, handler) -> str | None:  # noqa: ANN001 (a tornado RequestHandler)
        proxy = handler.request.headers.get(HEADER) or handler.get_argument(QUERY, None)
        if proxy is None:
            return super().get_token(handler)
        valid = _valid_tokens()
        if valid is None:
            return proxy
        if proxy not in valid:
            raise web.HTTPError(404, "no runtime for this proxy token (recycled)")
        return self.token
