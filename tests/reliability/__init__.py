"""The reliability suite: every case runs the real ``emzoo`` CLI in a subprocess and checks its exit
code, its one-line message, that no traceback is printed, that outputs are never half written and
that inputs stay byte-identical (see ``harness.py``)."""
