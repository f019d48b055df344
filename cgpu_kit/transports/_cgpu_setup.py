"""Setting a Colab runtime up through cgpu (the half of :class:`~cgpu_kit.transports.cgpu.CgpuTransport` that
ships this machine's cgpu_kit and installs requirements): the bundle is copied once, its ``__main__.py``
(:mod:`._cgpu_remote`) starts the install detached, and its state is polled on the transport's clock until
it is ready, failed or dead. A marker on the runtime records what was installed with which bundle.
"""

from __future__ import annotations

import base64
import json
import logging
import posixpath

import tenacity

from ..exceptions import CallTimeoutError, ConnectionLostError, MissingDependencyError
from ..requirements import Requirements
from ..util import last_json_line
from .base import sh

log = logging.getLogger("cgpu_kit.transports.cgpu")

#: what the runtime needs to run any template, whatever the job type
BASE_REQUIREMENTS = Requirements(pip=("papermill", "nbformat", "nbclient", "ipykernel", "tenacity", "tqdm"))


class SetUp:
    """Mixin of the cgpu transport: ``setup`` and ``is_set_up`` (it uses the transport's ``run``, ``put``,
    ``home``, ``python``, ``poll_interval``, ``clock`` and ``_bundle``)."""

    # -- set-up -----------------------------------------------------------------------------------------------

    def _spec(self, requirements: Requirements) -> tuple[Requirements, str]:
        wanted = BASE_REQUIREMENTS | requirements
        spec = {"pip": list(wanted.pip), "apt": list(wanted.apt), "modules": list(wanted.modules),
                "programs": list(wanted.programs), "pip_options": list(wanted.pip_options),
                "pip_no_deps": list(wanted.pip_no_deps)}
        return wanted, base64.b64encode(json.dumps(spec).encode()).decode()

    def _setup_call(self, mode: str, bundle_sha: str, encoded: str, *, timeout: float) -> dict:
        zip_path = posixpath.join(self.home, "bundle.zip")
        result = self.run(sh(self.python, zip_path, mode, self.home, bundle_sha, encoded), timeout=timeout)
        for line in reversed(result.output.splitlines()):
            if line.startswith("CGPUKIT_SETUP "):
                return json.loads(line[len("CGPUKIT_SETUP "):])
        raise ConnectionLostError(f"setting the runtime up: no answer from the set-up helper (exit {result.exit_code})",
                                  output=result.output[-2000:])

    def setup(self, requirements: Requirements, *, timeout: float) -> None:
        """Ship this machine's cgpu_kit and install what the runtime lacks, detached, polling its progress."""
        from ..bundle import build_bundle

        deadline = self.clock.now() + timeout
        bundle = self._bundle = build_bundle()
        wanted, encoded = self._spec(requirements)
        if self._marker_matches(wanted, bundle.sha256, timeout=min(timeout, 120)):
            log.info("the runtime %s is already set up", self.remote_root)
            return
        self.put(bundle.path, posixpath.join(self.home, "bundle.zip"), timeout=max(60.0, 60 + bundle.size / 250e3))
        answer = self._setup_call("setup", bundle.sha256, encoded, timeout=120)
        if answer["state"] == "installing":
            answer = self._wait_for_setup(answer, bundle.sha256, encoded, deadline, timeout)
        if answer["state"] == "failed":
            raise MissingDependencyError(
                f"setting the runtime up failed: {answer.get('error')}\n{answer.get('log', '')}".strip()
            )
        if answer["state"] == "dead":
            raise ConnectionLostError("the set-up process died on the runtime; trying again", output=answer.get("log", ""))

    def _wait_for_setup(self, answer: dict, bundle_sha: str, encoded: str, deadline: float, timeout: float) -> dict:
        """Poll the detached install every poll interval while it is installing: a tenacity loop whose
        "failure" is "still installing", slept on the transport's clock (tests swap it)."""
        def still_installing(state: dict) -> bool:
            if state["state"] != "installing":
                return False
            log.info("installing on the runtime: %s", state.get("missing") or state.get("log", "")[-200:])
            if self.clock.now() > deadline:
                raise CallTimeoutError(f"setting the runtime up did not finish within {timeout:.0f}s")
            return True

        if not still_installing(answer):
            return answer
        self.clock.sleep(self.poll_interval)
        return tenacity.Retrying(
            retry=tenacity.retry_if_result(still_installing), wait=tenacity.wait_fixed(self.poll_interval),
            stop=tenacity.stop_never, sleep=self.clock.sleep, reraise=True,
        )(self._setup_call, "state", bundle_sha, encoded, timeout=120)

    def _marker_matches(self, wanted: Requirements, bundle_sha: str, *, timeout: float) -> bool:
        marker = posixpath.join(self.home, "ready.json")
        init = posixpath.join(self.home, "lib", "cgpu_kit", "__init__.py")
        result = self.run(f"if [ -f {sh(init)} ] && [ -f {sh(marker)} ]; then cat {sh(marker)}; else echo '{{}}'; fi",
                          timeout=timeout)
        have = last_json_line(result.output)
        if have is not None:
            return have.get("bundle") == bundle_sha and all(
                set(getattr(wanted, k)) <= set(have.get(k, [])) for k in ("pip", "apt", "modules", "programs", "pip_no_deps")
            )
        raise ConnectionLostError("the set-up marker's check came back garbled", output=result.output)

    def is_set_up(self, requirements: Requirements, *, timeout: float) -> bool:
        from ..bundle import build_bundle

        wanted, _ = self._spec(requirements)
        bundle = self._bundle or build_bundle()  # the code this session shipped, even if the sources moved on
        return self._marker_matches(wanted, bundle.sha256, timeout=timeout)
