"""Loaded BY the test runtime's jupyter_server: accept Colab's runtime proxy token header as the server token.

On Colab, cgpu reaches the runtime's Jupyter server through Colab's proxy with the header
``X-Colab-Runtime-Proxy-Token`` (see cgpu's ``src/colab/headers.ts``); the proxy checks it. A stock
jupyter_server reads its token from ``?token=`` or ``Authorization: token ...`` only, so this provider also reads
that header, and is otherwise jupyter_server's own (hidden paths refused, xsrf checks as usual).
"""

from __future__ import annotations

from jupyter_server.auth.identity import IdentityProvider

HEADER = "X-Colab-Runtime-Proxy-Token"


class ColabProxyIdentityProvider(IdentityProvider):
    def get_token(self, handler) -> str | None:  # noqa: ANN001 (a tornado RequestHandler)
        return handler.request.headers.get(HEADER) or super().get_token(handler)
