"""Our EC2 instances: how they are tagged and how to find a job's, run's or attempt's.

The tags are the contract between Launch trainer (which writes them), the instance's boot
script (reads job/run/attempt/image from its metadata), Clean up, Instance lost, the IAM
conditions of the CDK app (``app=spotyolo``) and the local engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spotyolo.core.models import Attempt, JobSpec

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import FilterTypeDef, InstanceTypeDef

#: every instance the pipeline starts has APP_TAG=APP; cleanup terminates only those
APP_TAG = "app"
APP = "spotyolo"
JOB_TAG = "job"
RUN_TAG = "run"
ATTEMPT_TAG = "attempt"
IMAGE_TAG = "image"
#: the user's mark on the one instance the stack's FIS experiment may interrupt (README, "Deploy")
INTERRUPT_TAG = "interrupt"
INTERRUPT = "yes"
LIVE_STATES = ["pending", "running", "stopping", "stopped"]


def instance_tags(job: JobSpec, attempt: Attempt, image: str) -> dict[str, str]:
    """The tags of an attempt's instance."""
    return {
        APP_TAG: APP,
        JOB_TAG: job.name,
        RUN_TAG: job.run_id,
        ATTEMPT_TAG: str(attempt.number),
        IMAGE_TAG: image,
        "Name": f"spotyolo-{job.name}-{attempt.number}",
    }


def run_instances_of(
    ec2: EC2Client,
    job: str,
    run_id: str | None = None,
    attempt: int | None = None,
    states: list[str] | None = None,
) -> list[InstanceTypeDef]:
    """Our instances of ``job`` (of one run / attempt), not yet terminated by default."""
    filters: list[FilterTypeDef] = [
        {"Name": f"tag:{APP_TAG}", "Values": [APP]},
        {"Name": f"tag:{JOB_TAG}", "Values": [job]},
        {"Name": "instance-state-name", "Values": states or LIVE_STATES},
    ]
    if run_id:
        filters.append({"Name": f"tag:{RUN_TAG}", "Values": [run_id]})
    if attempt is not None:
        filters.append({"Name": f"tag:{ATTEMPT_TAG}", "Values": [str(attempt)]})
    found: list[InstanceTypeDef] = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page.get("Reservations", []):
            found.extend(reservation.get("Instances", []))
    return found


def terminate_run(ec2: EC2Client, job: str, run_id: str) -> list[str]:
    """Terminate the run's live instances (found by their job and run tags); their ids."""
    ids = [i["InstanceId"] for i in run_instances_of(ec2, job, run_id)]
    if ids:
        ec2.terminate_instances(InstanceIds=ids)
    return ids
