"""The local engine: docs/ARCHITECTURE.md, "The local engine".

One process runs moto's server (the AWS emulator), executes the very ASL file the CDK app
deploys, routes Lambda invocations to ``functions.<name>.handler`` in-process, bridges the
EventBridge rules (which moto delivers but never acts on) to their targets, and turns each
launched EC2 instance into a ``python -m spotyolo.trainer`` subprocess with a fake metadata service.
"""

from spotyolo.local.engine import LocalEngine

__all__ = ["LocalEngine"]
