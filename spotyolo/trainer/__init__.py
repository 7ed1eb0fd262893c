"""The spotyolo trainer: what runs on the EC2 instance (``python -m spotyolo.trainer``).

It reads its job from S3 and its task token from the job table, trains with Ultralytics,
keeps a resumable checkpoint in S3 every epoch, watches for spot interruption notices, and
tells the state machine what happened through the task token (docs/ARCHITECTURE.md,
"The trainer"). See ``main.py``
for the environment contract and the exit codes.
"""
