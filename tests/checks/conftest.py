"""The state-dict package of the trust tests (a session fixture; see tests/package/statedict.py)."""

from tests.package.statedict import trust_base  # noqa: F401
