"""What each command does, wired once: spec -> render -> write -> engine. No terminal code here.

Each command is a function of an area module taking a `Session` (session.py: the spec, the rendered
output, the engine client and the lock, each loaded once): `stack` (generate, build, up, scale, down,
prune, env), `swarm`, `export`, `oneoff`, `db`, `backups` (pgBackRest), `upgrade`, `media`, `deploys`
(deploy, rollback). A caller (the CLI, deploystack.testing, the CDC's runner, the tests) makes the one
session of its command and calls the area's function with it:

    from deploystack.operations import Session, Target, stack
    stack.up(Session(Target.of(spec, None), report))
"""

from deploystack.operations.session import Session as Session
from deploystack.target import Target as Target
