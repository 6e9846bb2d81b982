"""The state-dict packages of the trust tests (session fixtures; see tests/package/statedict.py)."""

from tests.package.statedict import counter_base, trust_base  # noqa: F401
