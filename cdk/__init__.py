"""The AWS CDK app of spotyolo: one Stack (spotyolo_stack.py) composed of *_construct.py files."""
