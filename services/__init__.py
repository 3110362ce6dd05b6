"""KnowledgeNest services: one package per service, and the shared event kit in ``services.kit``."""
import warnings


def quiet_known_warnings():
    """Hide the two warnings our pinned dependencies print at every start, and nothing else.

    eventlet announces its own deprecation on import (nameko 2.x runs on it; we know), and
    nameko 2.14's CLI imports pkg_resources, which setuptools reports as deprecated (setup.cfg pins
    setuptools<81, where it still exists). Called here, so that ``knowledge-nest`` and anything
    else importing ``services`` first is quiet, and from ``knowledge_nest_quiet.pth`` at interpreter
    start, so that nameko's own ``nameko run`` console script is quiet too (it imports both before
    any of our code). Only stdlib here: the .pth runs in every interpreter of the environment.
    """
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated", category=Warning)
    warnings.filterwarnings("ignore", message=r"pkg_resources is deprecated as an API",
                            category=UserWarning)


quiet_known_warnings()
