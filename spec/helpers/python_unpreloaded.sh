#!/bin/sh
# The Python that `make asan` gives imm.testing (IMM_PYTHON): the local IMM
# server is not under test, and under the sanitizers' LD_PRELOAD it took
# 30 s to start on a loaded host, past imm.testing's 15 s.
exec env -u LD_PRELOAD python3 "$@"
