"""The contract between spotyolo's parts: every name that two parts share is defined here once.

- :mod:`.errors`: error names (exception classes and the Fail-state names), what they mean;
- :mod:`.status`: the job item's ``status`` and an attempt's ``outcome``;
- :mod:`.layout`: the S3 layout (every key the pipeline reads or writes);
- :mod:`.lambdas`: the Lambda functions, their handler paths and ASL placeholders;
- :mod:`.asl`: the state machine file, its placeholders, substitution and structural checks;
- :mod:`.env`: the environment of the Lambdas and of the trainer, written and read by one model;
- :mod:`.events`: the EventBridge patterns and the start rule's input transformer.

It imports nothing else of spotyolo: every other part imports it (docs/ARCHITECTURE.md).
"""
