"""The composition root: the `alerts` command, dev and demo, the process supervisor, embedded infrastructure.

Every fork in these processes is followed by exec (service processes, pgserver's pg_ctl run as its own
user). gRPC's fork handlers, run in such a child while other threads were inside gRPC, crashed it before
exec (pg_ctl start died of SIGSEGV while a test's burst was in flight), so they are off before gRPC starts.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
