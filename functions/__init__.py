"""One thin Lambda entry point per function: parse the event, call the step's logic in
spotyolo.steps, return. Deployed in the Lambda asset beside spotyolo/, never installed."""
