"""What `cdk deploy` would create, read from the synthesized template (one synth per session)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cdk_testing import ACCOUNT, REGION, REPO_ROOT, Synth, render, synthesize
from moto.events.models import EventPattern
from packaging.utils import canonicalize_name

from cdk import lambda_bundle
from spotyolo.contract import asl
from spotyolo.contract.lambdas import LambdaName
from spotyolo.core.slots import TABLE_KEYS

SETTINGS_ENV = [
    "BUCKET",
    "JOB_TABLE",
    "TOPIC_ARN",
    "TRAINER_IMAGE",
    "LAUNCH_TEMPLATE_ID",
    "LAUNCH_TEMPLATE_VERSION",
    "SUBNET_IDS",
    "DEFAULT_INSTANCE_TYPES",
    "SETTLE_SECONDS",
    "ROOT_VOLUME_BASE_GB",
]
LAMBDAS = {name.value for name in LambdaName}


def statements(resource: dict[str, Any]) -> list[dict[str, Any]]:
    return list(resource["Properties"]["PolicyDocument"]["Statement"])


def role_statements(synth: Synth, role_id: str) -> list[dict[str, Any]]:
    found = []
    for policy in synth.of_type("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            found += statements(policy)
    role = synth.resources[role_id]["Properties"]
    for inline in role.get("Policies", []):
        found += inline["PolicyDocument"]["Statement"]
    assert not role.get("ManagedPolicyArns"), f"{role_id} has managed policies"
    return found


def actions_of(stmts: list[dict[str, Any]]) -> set[str]:
    out: set[str] = set()
    for st in stmts:
        acts = st["Action"]
        out |= {acts} if isinstance(acts, str) else set(acts)
    return out


def function_role(synth: Synth, name: str) -> str:
    fn = synth.resources[synth.function_ids()[name]]
    return str(fn["Properties"]["Role"]["Fn::GetAtt"][0])


# --- the state machine


def test_deployed_definition_is_the_asl_file_with_every_placeholder_substituted(synth: Synth) -> None:
    _, machine = synth.one("AWS::StepFunctions::StateMachine")
    props = machine["Properties"]
    text = asl.load_asl_text()
    assert props["DefinitionString"] == text  # inlined unchanged: the local engine runs the same
    subs = props["DefinitionSubstitutions"]
    assert set(subs) == asl.placeholders(text) == set(asl.PLACEHOLDERS)
    ids = synth.function_ids()
    expected = {
        "ValidateFunctionArn": "validate",
        "LaunchFunctionArn": "launch",
        "PrepareRetryFunctionArn": "prepare_retry",
        "CheckResultFunctionArn": "check_result",
        "CleanupFunctionArn": "cleanup",
    }
    for placeholder, name in expected.items():
        assert subs[placeholder] == {"Fn::GetAtt": [ids[name], "Arn"]}, placeholder
    topic_id, _ = synth.one("AWS::SNS::Topic")
    assert subs["TopicArn"] == {"Ref": topic_id}


def test_rendered_definition_leaves_nothing_unsubstituted(synth: Synth) -> None:
    rendered = rendered_definition(synth)
    assert "${" not in rendered, re.findall(r".{30}\$\{.{30}", rendered)
    definition = json.loads(rendered)
    assert asl.validate_definition(definition, require_substituted=True) == []
    names = {
        st["Parameters"]["FunctionName"]
        for st in definition["States"].values()
        if st.get("Type") == "Task" and "lambda:invoke" in st.get("Resource", "")
    }
    assert names and all(n.startswith(f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:") for n in names)


def rendered_definition(synth: Synth) -> str:
    _, machine = synth.one("AWS::StepFunctions::StateMachine")
    subs = {
        k: render(v, synth.resources) for k, v in machine["Properties"]["DefinitionSubstitutions"].items()
    }
    return asl.substitute(machine["Properties"]["DefinitionString"], subs)


def test_state_machine_logs_failures_without_tokens_traces_and_may_invoke_exactly_its_six_lambdas(
    synth: Synth,
) -> None:
    _, machine = synth.one("AWS::StepFunctions::StateMachine")
    props = machine["Properties"]
    # the Launch trainer task's parameters hold the task token: no level that logs them
    assert props["LoggingConfiguration"]["Level"] == "ERROR" == asl.LOG_LEVEL
    assert props["LoggingConfiguration"]["IncludeExecutionData"] is False
    assert props["TracingConfiguration"] == {"Enabled": True}
    log_group = props["LoggingConfiguration"]["Destinations"][0]["CloudWatchLogsLogGroup"]["LogGroupArn"]
    assert synth.resources[log_group["Fn::GetAtt"][0]]["Properties"]["RetentionInDays"] == 14
    stmts = role_statements(synth, props["RoleArn"]["Fn::GetAtt"][0])
    invoke = [st for st in stmts if st["Action"] == "lambda:InvokeFunction"]
    assert len(invoke) == 1
    ids = synth.function_ids()
    wanted = [
        {"Fn::GetAtt": [ids[n], "Arn"]}
        for n in ("validate", "launch", "prepare_retry", "check_result", "cleanup", "slot_queue")
    ]
    assert sorted(map(json.dumps, invoke[0]["Resource"])) == sorted(map(json.dumps, wanted))
    topic_id, _ = synth.one("AWS::SNS::Topic")
    assert {
        "Effect": "Allow",
        "Action": "sns:Publish",
        "Resource": {"Ref": topic_id},
        "Sid": "Notify",
    } in stmts


def test_cloudformation_names_the_state_machine_and_the_lambdas_reach_its_executions(synth: Synth) -> None:
    """No fixed name (a replacement of the state machine would fail on it): the Lambdas that
    describe or stop executions get them from the state machine's Name attribute, in policies
    of their own (no cycle: the state machine depends on the functions, not the other way)."""
    sm_id, machine = synth.one("AWS::StepFunctions::StateMachine")
    assert "StateMachineName" not in machine["Properties"]
    for fn in synth.of_type("AWS::Lambda::Function").values():
        assert sm_id not in json.dumps(fn), "a Lambda that depends on the state machine: a cycle"
        assert "STATE_MACHINE_ARN" not in fn["Properties"]["Environment"]["Variables"]
    executions = {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                ":states:",
                {"Ref": "AWS::Region"},
                ":",
                {"Ref": "AWS::AccountId"},
                ":execution:",
                {"Fn::GetAtt": [sm_id, "Name"]},
                ":*",
            ],
        ]
    }
    for name, action in (("validate", "states:DescribeExecution"), ("cancel", "states:StopExecution")):
        stmts = [st for st in role_statements(synth, function_role(synth, name)) if st["Action"] == action]
        assert [st["Resource"] for st in stmts] == [executions], name
    deploy = (REPO_ROOT / "README.md").read_text().split("## Deploy to AWS", 1)[1].split("\n## ", 1)[0]
    assert "-training-pipeline" not in deploy and "StateMachineArn" in deploy


# --- the Lambdas


def test_lambdas_runtime_handlers_and_environment(synth: Synth) -> None:
    functions = synth.of_type("AWS::Lambda::Function")
    assert set(synth.function_ids()) == LAMBDAS
    for logical_id, fn in functions.items():
        props = fn["Properties"]
        assert props["Runtime"] == "python3.14" and props["Architectures"] == ["x86_64"], logical_id
        assert props["TracingConfig"] == {"Mode": "Active"}
        env = props["Environment"]["Variables"]
        assert set(SETTINGS_ENV) <= set(env), set(SETTINGS_ENV) - set(env)
        assert env["DEFAULT_INSTANCE_TYPES"] == "g6.xlarge,g5.xlarge"
        assert env["ROOT_VOLUME_BASE_GB"] == "80"
        assert env["POWERTOOLS_SERVICE_NAME"] == "spotyolo"
        assert "ProvisionedConcurrencyConfig" not in props


def test_powertools_is_bundled_in_the_code_asset_so_every_region_works(synth: Synth) -> None:
    """No layer and no regional SSM lookup: the one asset carries Powertools and its dependencies,
    built for the runtime (CPython 3.14 x86_64), within Lambda's 250 MB unzipped."""
    functions = synth.of_type("AWS::Lambda::Function").values()
    assert not [fn for fn in functions if "Layers" in fn["Properties"]]
    parameters = json.dumps(synth.template.get("Parameters", {}))
    assert "/aws/service/powertools" not in parameters and "powertools" not in parameters.lower()
    (key,) = {fn["Properties"]["Code"]["S3Key"] for fn in functions}
    asset = synth.outdir / f"asset.{key.removesuffix('.zip')}"
    assert (asset / "aws_lambda_powertools/__init__.py").is_file()
    assert (asset / "aws_lambda_powertools/utilities/parser/__init__.py").is_file()
    assert list(asset.glob("pydantic_core/_pydantic_core.cpython-314-x86_64-linux-gnu.so"))
    assert not list(asset.rglob("*cpython-311*")), "a compiled module of the venv's Python"
    for requirement in lambda_bundle.LAMBDA_REQUIREMENTS:
        name, _, pinned = requirement.partition("==")
        dist = f"{canonicalize_name(name).replace('-', '_')}-{pinned}.dist-info"
        assert [p for p in asset.iterdir() if p.name.lower() == dist], requirement
    size = lambda_bundle.tree_bytes(asset)
    assert size < lambda_bundle.MAX_UNZIPPED_BYTES / 5, f"{size / 2**20:.0f} MB"


def test_event_invoked_lambdas_have_a_dead_letter_queue(synth: Synth) -> None:
    queue_id, queue = synth.one("AWS::SQS::Queue")
    assert queue["Properties"]["SqsManagedSseEnabled"] is True
    ids = synth.function_ids()
    for name in ("cleanup", "instance_lost", "cancel"):
        props = synth.resources[ids[name]]["Properties"]
        assert props["DeadLetterConfig"]["TargetArn"] == {"Fn::GetAtt": [queue_id, "Arn"]}, name


# --- IAM


def test_no_policy_allows_every_action(synth: Synth) -> None:
    for logical_id, resource in synth.resources.items():
        docs = []
        if resource["Type"] == "AWS::IAM::Policy" or resource["Type"].endswith("Policy"):
            docs.append(resource["Properties"].get("PolicyDocument", {}))
        for st in (s for d in docs for s in d.get("Statement", []) if s["Effect"] == "Allow"):
            acts = st.get("Action", [])
            acts = [acts] if isinstance(acts, str) else acts
            assert "*" not in acts and not any(a.endswith(":*") for a in acts), (logical_id, st)


def test_instance_role_has_no_ec2_or_iam_and_only_what_the_trainer_does(synth: Synth) -> None:
    _, profile = synth.one("AWS::IAM::InstanceProfile")
    (role,) = profile["Properties"]["Roles"]
    actions = actions_of(role_statements(synth, role["Ref"]))
    assert not any(a.startswith(("ec2:", "iam:")) for a in actions), actions
    assert {
        "states:SendTaskSuccess",
        "states:SendTaskFailure",
        "states:SendTaskHeartbeat",
        "s3:GetObject",
        "s3:PutObject",
        "dynamodb:UpdateItem",
        "dynamodb:GetItem",
        "logs:PutLogEvents",
    } <= actions
    assert not any(
        a.startswith(("s3:Delete", "dynamodb:Delete", "dynamodb:Put", "states:Start", "states:Stop"))
        for a in actions
    )
    writes = [st for st in role_statements(synth, role["Ref"]) if "s3:PutObject" in st["Action"]]
    assert all(json.dumps(st["Resource"]).endswith('/runs/*"]]}') for st in writes), writes


def test_launch_may_pass_only_the_trainer_role_to_ec2(synth: Synth) -> None:
    _, profile = synth.one("AWS::IAM::InstanceProfile")
    (trainer_role,) = profile["Properties"]["Roles"]
    for name in LAMBDAS:
        stmts = role_statements(synth, function_role(synth, name))
        passes = [st for st in stmts if "iam:PassRole" in actions_of([st])]
        if name != "launch":
            assert not passes, name
            continue
        (st,) = passes
        assert st["Resource"] == {"Fn::GetAtt": [trainer_role["Ref"], "Arn"]}
        assert st["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}


def test_instances_are_created_and_terminated_only_when_tagged_app_spotyolo(synth: Synth) -> None:
    for name in LAMBDAS:
        for st in role_statements(synth, function_role(synth, name)):
            acts = actions_of([st])
            resources = json.dumps(st["Resource"])
            if "ec2:TerminateInstances" in acts:
                assert st["Condition"] == {"StringEquals": {"ec2:ResourceTag/app": "spotyolo"}}, name
            if acts & {"ec2:RunInstances", "ec2:CreateFleet"} and ":instance/*" in resources:
                assert st["Condition"] == {"StringEquals": {"aws:RequestTag/app": "spotyolo"}}, name


AWS_CALL = re.compile(r"\b(s3|ec2|sfn|sns|pricing|quotas)\.(\w+)\(")
#: boto3 method -> IAM action (where the name does not simply CamelCase)
ACTION_OF = {
    ("s3", "head_object"): "s3:GetObject",
    ("s3", "copy_object"): "s3:PutObject",
    ("s3", "list_objects_v2"): "s3:ListBucket",
    ("s3", "list_multipart_uploads"): "s3:ListBucketMultipartUploads",
    ("s3", "get_paginator"): "s3:ListBucket",
    ("quotas", "get_aws_default_service_quota"): "servicequotas:GetAWSDefaultServiceQuota",
}
HELPERS = {
    "cleanup": [
        "spotyolo/steps/ending.py",
        "spotyolo/core/slots.py",
        "spotyolo/core/quotas.py",
        "spotyolo/core/fleet.py:run_instances_of",
        "spotyolo/core/cost.py",
    ],
    "cancel": [
        "spotyolo/steps/ending.py",
        "spotyolo/core/slots.py",
        "spotyolo/core/quotas.py",
        "spotyolo/core/fleet.py:run_instances_of",
        "spotyolo/core/cost.py",
    ],
    "prepare_retry": ["spotyolo/core/fleet.py:run_instances_of", "spotyolo/core/cost.py"],
    "check_result": ["spotyolo/core/cost.py"],
    "validate": ["spotyolo/core/dataset/sources.py", "spotyolo/core/quotas.py"],
    "slot_queue": ["spotyolo/core/slots.py", "spotyolo/core/quotas.py"],
}


def _calls(name: str) -> set[str]:
    sources = [
        (REPO_ROOT / f"functions/{name}.py").read_text(),
        (REPO_ROOT / f"spotyolo/steps/{name}.py").read_text(),
    ]
    for helper in HELPERS.get(name, []):
        path, _, func = helper.partition(":")
        text = (REPO_ROOT / path).read_text()
        if func:
            text = text[text.index(f"def {func}(") :]
            text = text[: text.find("\ndef ", 1)]
        sources.append(text)
    out = set()
    for service, method in AWS_CALL.findall("\n".join(sources)):
        if method == "get_paginator":
            continue
        prefix = {"sfn": "states", "quotas": "servicequotas"}.get(service, service)
        out.add(
            ACTION_OF.get((service, method), f"{prefix}:{''.join(w.capitalize() for w in method.split('_'))}")
        )
    if name in ("launch", "cleanup", "cancel", "prepare_retry", "instance_lost"):
        out.add("ec2:DescribeInstances")  # via describe_instances paginators
    return out


@pytest.mark.parametrize("name", sorted(LAMBDAS))
def test_each_lambda_may_make_the_aws_calls_its_code_makes(synth: Synth, name: str) -> None:
    granted = actions_of(role_statements(synth, function_role(synth, name)))
    missing = _calls(name) - granted
    assert not missing, (
        f"functions/{name}.py calls {sorted(missing)}: grant them in cdk/functions_construct.py"
    )


# --- EventBridge rules


def rule(synth: Synth, name: str) -> dict[str, Any]:
    (found,) = [r for k, r in synth.of_type("AWS::Events::Rule").items() if k.startswith(f"Events{name}")]
    return found["Properties"]


def s3_event(detail_type: str, key: str, bucket: str | None = None) -> dict[str, Any]:
    return {
        "version": "0",
        "id": "1",
        "source": "aws.s3",
        "account": ACCOUNT,
        "region": REGION,
        "time": "2026-01-01T00:00:00Z",
        "resources": [],
        "detail-type": detail_type,
        "detail": {"bucket": {"name": bucket or BUCKET}, "object": {"key": key, "size": 10}},
    }


def ec2_event(state: str) -> dict[str, Any]:
    return {
        "source": "aws.ec2",
        "detail-type": "EC2 Instance State-change Notification",
        "detail": {"instance-id": "i-0123456789abcdef0", "state": state},
    }


def execution_event(status: str, arn: str | None = None) -> dict[str, Any]:
    return {
        "source": "aws.states",
        "detail-type": "Step Functions Execution Status Change",
        "detail": {"status": status, "stateMachineArn": arn or STATE_MACHINE, "executionArn": "x"},
    }


BUCKET = "storagejobs4c7573cb"  # what cdk_testing.render makes of Ref <job bucket>
STATE_MACHINE = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:"

CASES = [
    ("ConfigCreated", s3_event("Object Created", "jobs/shapes/config.yaml"), True),
    ("ConfigCreated", s3_event("Object Created", "jobs/shapes/dataset/a.txt"), False),
    ("ConfigCreated", s3_event("Object Created", "jobs/shapes/config.yaml.bak"), False),
    ("ConfigCreated", s3_event("Object Created", "runs/shapes/config.yaml"), False),
    ("ConfigCreated", s3_event("Object Created", "jobs/shapes/config.yaml", bucket="someone-else"), False),
    ("ConfigCreated", s3_event("Object Deleted", "jobs/shapes/config.yaml"), False),
    ("ConfigDeleted", s3_event("Object Deleted", "jobs/shapes/config.yaml"), True),
    ("ConfigDeleted", s3_event("Object Deleted", "jobs/shapes/dataset/data.yaml"), False),
    ("ConfigDeleted", s3_event("Object Created", "jobs/shapes/config.yaml"), False),
    ("InstanceGone", ec2_event("terminated"), True),
    ("InstanceGone", ec2_event("shutting-down"), True),
    ("InstanceGone", ec2_event("running"), False),
    ("InstanceGone", ec2_event("stopped"), False),
    ("ExecutionEnded", execution_event("FAILED"), True),
    ("ExecutionEnded", execution_event("ABORTED"), True),
    ("ExecutionEnded", execution_event("TIMED_OUT"), True),
    ("ExecutionEnded", execution_event("SUCCEEDED"), False),
    ("ExecutionEnded", execution_event("RUNNING"), False),
    ("ExecutionEnded", execution_event("FAILED", arn=f"{STATE_MACHINE}other"), False),
]


@pytest.mark.parametrize(
    ("name", "event", "matches"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_rules_match_the_right_events(synth: Synth, name: str, event: dict[str, Any], matches: bool) -> None:
    pattern = render(rule(synth, name)["EventPattern"], synth.resources)
    if event["source"] == "aws.states" and event["detail"]["stateMachineArn"] == STATE_MACHINE:
        sm_id, _ = synth.one("AWS::StepFunctions::StateMachine")
        event["detail"]["stateMachineArn"] = render({"Ref": sm_id}, synth.resources)
    assert EventPattern.load(json.dumps(pattern)).matches_event(event) is matches  # type: ignore[arg-type]


def test_rule_targets_retry_into_a_dead_letter_queue_and_reach_the_right_place(synth: Synth) -> None:
    queue_id, _ = synth.one("AWS::SQS::Queue")
    sm_id, _ = synth.one("AWS::StepFunctions::StateMachine")
    ids = synth.function_ids()
    expected = {
        "ConfigCreated": {"Ref": sm_id},
        "ConfigDeleted": {"Fn::GetAtt": [ids["cancel"], "Arn"]},
        "InstanceGone": {"Fn::GetAtt": [ids["instance_lost"], "Arn"]},
        "ExecutionEnded": {"Fn::GetAtt": [ids["cleanup"], "Arn"]},
    }
    for name, arn in expected.items():
        props = rule(synth, name)
        assert props["State"] == "ENABLED"
        (target,) = props["Targets"]
        assert target["Arn"] == arn, name
        assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [queue_id, "Arn"]}}
        assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 3


def test_start_execution_input_is_bucket_and_key(synth: Synth) -> None:
    (target,) = rule(synth, "ConfigCreated")["Targets"]
    transformer = target["InputTransformer"]
    event = s3_event("Object Created", "jobs/shapes/config.yaml")
    values = {}
    for name, path in transformer["InputPathsMap"].items():
        value: Any = event
        for part in path.removeprefix("$.").split("."):
            value = value[part]
        values[name] = value
    template = render(transformer["InputTemplate"], synth.resources)
    result = re.sub(r"<([\w-]+)>", lambda m: json.dumps(values[m.group(1)]), template)
    assert json.loads(result) == {"bucket": BUCKET, "key": "jobs/shapes/config.yaml"}


# --- the trainer


def test_launch_template_is_locked_down(synth: Synth) -> None:
    _, lt = synth.one("AWS::EC2::LaunchTemplate")
    data = lt["Properties"]["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["InstanceMetadataTags"] == "enabled"  # user data reads its tags
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 2  # the container reaches IMDS
    assert data["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert "KeyName" not in data
    (device,) = data["BlockDeviceMappings"]
    assert device["Ebs"] == {
        "DeleteOnTermination": True,
        "Encrypted": True,
        "VolumeSize": 80,
        "VolumeType": "gp3",
    }
    image = data["ImageId"]["Ref"]
    assert (
        synth.template["Parameters"][image]["Default"]
        == "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
    )


def test_user_data_runs_the_trainer_on_the_gpus_and_powers_off(synth: Synth) -> None:
    _, lt = synth.one("AWS::EC2::LaunchTemplate")
    script = render(lt["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"], synth.resources)
    assert script.startswith("#!/bin/bash")
    for needle in (
        "--gpus all",
        "--ipc=host",
        "--log-driver awslogs",
        "shutdown -h now",
        "tags/instance/job",
        "tags/instance/run",
        "tags/instance/attempt",
        "tags/instance/image",
        'JOB="$JOB"',
        'RUN_ID="$RUN_ID"',
        'ATTEMPT="$ATTEMPT"',
        'AWS_REGION="$REGION"',
        "SPOTYOLO_EXPECT_GPU=1",
        "docker login",
        "JOB_TABLE=",
    ):
        assert needle in script, needle
    assert "trap" in script.split("docker run")[0]  # powers off even when the pull fails
    check = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    assert "TaskToken" not in script and "task_token" not in script.lower()


def test_trainer_security_group_has_no_ingress_and_only_https_out(synth: Synth) -> None:
    _, sg = synth.one("AWS::EC2::SecurityGroup")
    assert "SecurityGroupIngress" not in sg["Properties"]
    assert not synth.of_type("AWS::EC2::SecurityGroupIngress")
    (egress,) = sg["Properties"]["SecurityGroupEgress"]
    assert (egress["IpProtocol"], egress["FromPort"], egress["ToPort"]) == ("tcp", 443, 443)


def test_trainer_image_is_built_from_container_dockerfile_with_a_small_context(synth: Synth) -> None:
    if not (REPO_ROOT / "container/Dockerfile").is_file():
        pytest.fail("container/Dockerfile is missing: the trainer image cannot be built")
    (image,) = synth.assets["dockerImages"].values()
    assert image["source"]["dockerFile"] == "container/Dockerfile"
    assert image["source"]["platform"] == "linux/amd64"
    context = synth.outdir / image["source"]["directory"]
    assert (context / "container/Dockerfile").is_file()
    assert (context / "spotyolo").is_dir()
    for heavy in (".venv", ".git", "cdk.out", "node_modules"):
        assert not (context / heavy).exists(), heavy


# --- storage, notifications, encryption


def test_buckets_are_private_encrypted_ssl_only_and_emit_events(synth: Synth) -> None:
    buckets = synth.of_type("AWS::S3::Bucket")
    assert len(buckets) == 2
    for logical_id, bucket in buckets.items():
        props = bucket["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        assert (
            props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
                "ServerSideEncryptionByDefault"
            ]["SSEAlgorithm"]
            == "AES256"
        )
        assert bucket["DeletionPolicy"] == "Retain"
        policies = [
            p
            for p in synth.of_type("AWS::S3::BucketPolicy").values()
            if p["Properties"]["Bucket"] == {"Ref": logical_id}
        ]
        assert any(
            st["Effect"] == "Deny" and st["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            for p in policies
            for st in statements(p)
        ), logical_id
    jobs = next(b for k, b in buckets.items() if k.startswith("StorageJobs"))["Properties"]
    assert jobs["NotificationConfiguration"] == {"EventBridgeConfiguration": {"EventBridgeEnabled": True}}
    assert "LoggingConfiguration" in jobs
    assert not synth.of_type("Custom::S3BucketNotifications")


def test_topic_is_encrypted_ssl_only_and_mails_the_team(synth: Synth) -> None:
    topic_id, topic = synth.one("AWS::SNS::Topic")
    assert render(topic["Properties"]["KmsMasterKeyId"], synth.resources).endswith("alias/aws/sns")
    _, policy = synth.one("AWS::SNS::TopicPolicy")
    assert any(
        st["Effect"] == "Deny" and st["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for st in statements(policy)
    )
    _, sub = synth.one("AWS::SNS::Subscription")
    assert sub["Properties"] == {
        "Endpoint": "ml-team@example.com",
        "Protocol": "email",
        "TopicArn": {"Ref": topic_id},
    }


def test_job_and_slot_tables_are_on_demand_with_point_in_time_recovery(synth: Synth) -> None:
    tables = synth.of_type("AWS::DynamoDB::Table")
    keys = sorted(json.dumps(t["Properties"]["KeySchema"]) for t in tables.values())
    assert keys == sorted(
        json.dumps(k)
        for k in (
            [{"AttributeName": "job", "KeyType": "HASH"}],  # one item per job
            TABLE_KEYS["KeySchema"],  # slots (spotyolo.core.slots, as the engine creates it)
        )
    )
    for table in tables.values():
        props = table["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True


def test_every_log_group_expires(synth: Synth) -> None:
    groups = synth.of_type("AWS::Logs::LogGroup")
    assert len(groups) >= 10  # 7 Lambdas, state machine, trainer, flow logs
    assert all(g["Properties"]["RetentionInDays"] == 14 for g in groups.values())


# --- zero idle cost

#: resource types that cost nothing while no job runs (beyond storage of what they hold)
FREE_WHILE_IDLE = {
    "AWS::S3::Bucket",
    "AWS::S3::BucketPolicy",
    "AWS::DynamoDB::Table",
    "AWS::Lambda::Function",
    "AWS::Lambda::Permission",
    "AWS::Lambda::EventInvokeConfig",
    "AWS::IAM::Role",
    "AWS::IAM::Policy",
    "AWS::IAM::InstanceProfile",
    "AWS::Events::Rule",
    "AWS::SQS::Queue",
    "AWS::SQS::QueuePolicy",
    "AWS::SNS::Topic",
    "AWS::SNS::TopicPolicy",
    "AWS::SNS::Subscription",
    "AWS::StepFunctions::StateMachine",
    "AWS::Logs::LogGroup",
    "AWS::EC2::LaunchTemplate",
    "AWS::EC2::SecurityGroup",
    "AWS::EC2::VPC",
    "AWS::EC2::Subnet",
    "AWS::EC2::RouteTable",
    "AWS::EC2::SubnetRouteTableAssociation",
    "AWS::EC2::Route",
    "AWS::EC2::InternetGateway",
    "AWS::EC2::VPCGatewayAttachment",
    "AWS::EC2::VPCEndpoint",
    "AWS::EC2::FlowLog",
    "AWS::CDK::Metadata",
    "AWS::FIS::ExperimentTemplate",  # bills per action-minute of an experiment, nothing while idle
}


def test_nothing_costs_money_while_idle(synth: Synth) -> None:
    types = {r["Type"] for r in synth.resources.values()}
    assert types <= FREE_WHILE_IDLE, f"review the idle cost of {sorted(types - FREE_WHILE_IDLE)}"
    for resource in synth.of_type("AWS::EC2::VPCEndpoint").values():
        assert resource["Properties"]["VpcEndpointType"] == "Gateway"  # interface endpoints bill hourly
    assert not synth.of_type("AWS::EC2::NatGateway") and not synth.of_type("AWS::EC2::Instance")
    assert not synth.of_type("AWS::KMS::Key")  # a customer-managed key bills monthly
    for table in synth.of_type("AWS::DynamoDB::Table").values():
        assert table["Properties"]["BillingMode"] == "PAY_PER_REQUEST"
        assert "ProvisionedThroughput" not in table["Properties"]


# --- the FIS experiment: rehearse a spot interruption on AWS


def _allows(statement: dict[str, Any], action: str, resource: str, tags: dict[str, str]) -> bool:
    """Does an Allow statement (rendered) grant ``action`` on ``resource`` with these tags?
    (Only what the FIS role uses: exact actions, ``*`` suffixes, StringEquals on resource tags.)"""
    actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
    resources = [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]
    if action not in actions or not any(re.fullmatch(r.replace("*", ".*"), resource) for r in resources):
        return False
    for operator, conditions in statement.get("Condition", {}).items():
        assert operator == "StringEquals", operator
        for key, value in conditions.items():
            if tags.get(key.removeprefix("aws:ResourceTag/")) != value:
                return False
    return True


def test_fis_template_interrupts_only_the_trainer_the_user_marked(synth: Synth) -> None:
    """The stack's FIS template sends a real spot interruption notice (2 minutes ahead) to the one
    running spotyolo spot instance tagged interrupt=yes; its role can do nothing else."""
    from spotyolo.core.fleet import APP, APP_TAG, INTERRUPT, INTERRUPT_TAG, instance_tags
    from spotyolo.core.models import Attempt, JobSpec

    template_id, template = synth.one("AWS::FIS::ExperimentTemplate")
    props = template["Properties"]
    (action,) = props["Actions"].values()
    assert action["ActionId"] == "aws:ec2:send-spot-instance-interruptions"
    assert action["Parameters"] == {"durationBeforeInterruption": "PT2M"}
    ((role_in_action, target_name),) = action["Targets"].items()
    assert role_in_action == "SpotInstances"
    target = props["Targets"][target_name]
    marked = {APP_TAG: APP, INTERRUPT_TAG: INTERRUPT}
    assert target["ResourceType"] == "aws:ec2:spot-instance" and target["ResourceTags"] == marked
    assert target["Filters"] == [{"Path": "State.Name", "Values": ["running"]}]
    assert target["SelectionMode"] == "COUNT(1)"
    assert props["StopConditions"] == [{"Source": "none"}]
    # the launch never sets the mark: only a user's create-tags makes an instance a target
    examples = REPO_ROOT / "stepfunctions/examples"
    job = JobSpec.model_validate_json((examples / "job.json").read_text())
    tags = instance_tags(job, Attempt.model_validate_json((examples / "attempt.json").read_text()), "img")
    assert tags[APP_TAG] == APP and INTERRUPT_TAG not in tags

    role_id = props["RoleArn"]["Fn::GetAtt"][0]
    (trust,) = synth.resources[role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "fis.amazonaws.com"}
    assert set(trust["Condition"]) == {"StringEquals", "ArnLike"}  # this account's experiments only
    stmts = render(role_statements(synth, role_id), synth.resources)
    assert actions_of(stmts) == {"ec2:SendSpotInstanceInterruptions", "ec2:DescribeInstances"}
    instance = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0123456789abcdef0"

    def may_interrupt(instance_tags: dict[str, str]) -> bool:
        return any(_allows(st, "ec2:SendSpotInstanceInterruptions", instance, instance_tags) for st in stmts)

    assert may_interrupt({**tags, INTERRUPT_TAG: INTERRUPT})
    assert not may_interrupt(tags), "an unmarked trainer"
    assert not may_interrupt({"Name": "someone-else", INTERRUPT_TAG: INTERRUPT}), "not ours"

    outputs = synth.template["Outputs"]
    assert outputs["InterruptTemplateId"]["Value"] == {"Fn::GetAtt": [template_id, "Id"]}
    command = render(outputs["InterruptCommand"]["Value"], synth.resources)
    assert "Name=tag:job,Values=myjob" in command and f"Key={INTERRUPT_TAG},Value={INTERRUPT}" in command
    assert f"aws fis start-experiment --region {REGION} --experiment-template-id " in command


def _condition_regions(expression: dict[str, Any]) -> set[str]:
    """The regions an Fn::Or / Fn::Equals region condition accepts."""
    if "Fn::Or" in expression:
        return set().union(*(_condition_regions(e) for e in expression["Fn::Or"]))
    ref, region = expression["Fn::Equals"]
    assert ref == {"Ref": "AWS::Region"}
    return {region}


def test_fis_exists_only_where_aws_has_it_and_the_stack_deploys_everywhere(synth: Synth) -> None:
    """A region unknown at synth: the FIS resources and outputs carry a condition on exactly the
    regions that have AWS::FIS::ExperimentTemplate (cfn-lint's region schemas)."""
    from cfnlint.helpers import REGIONS
    from cfnlint.schema import PROVIDER_SCHEMA_MANAGER
    from cfnlint.schema._exceptions import ResourceNotFoundError

    from cdk.fis_construct import FIS_REGIONS

    def has_fis(region: str) -> bool:
        try:
            PROVIDER_SCHEMA_MANAGER.get_resource_schema(region, "AWS::FIS::ExperimentTemplate")
        except ResourceNotFoundError:
            return False
        return True

    assert sorted(FIS_REGIONS) == sorted(r for r in REGIONS if has_fis(r))
    assert "ap-southeast-4" not in FIS_REGIONS and "us-east-1" in FIS_REGIONS
    (name,) = synth.template["Conditions"]
    assert _condition_regions(synth.template["Conditions"][name]) == set(FIS_REGIONS)
    template_id, template = synth.one("AWS::FIS::ExperimentTemplate")
    role_id = template["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    fis = [k for k, r in synth.resources.items() if r.get("Condition") == name]
    assert {template_id, role_id} <= set(fis) and len(fis) == 3  # + the role's policy
    outputs = synth.template["Outputs"]
    assert {k for k, o in outputs.items() if o.get("Condition") == name} == {
        "InterruptTemplateId",
        "InterruptCommand",
    }


# --- cdk-nag, outputs, cfn-lint, the other network choice


def test_cdk_nag_has_no_open_finding_and_every_acknowledgement_is_used_and_explained(synth: Synth) -> None:
    (report,) = [r for r in synth.report["pluginReports"] if r["pluginName"] == "AwsSolutions"]
    assert report["conclusion"] == "success" and report["violations"] == []
    used = {(s["acknowledgedAt"], s["acknowledgedId"]) for s in report["suppressedViolations"]}
    acks = {
        (path.lstrip("/"), ack_id): reason
        for path, entries in synth.metadata.items()
        for e in entries
        if e["type"] == "aws:cdk:acknowledged-rules"
        for ack_id, reason in e["data"].items()
        if ack_id.startswith("AwsSolutions::")
    }
    assert set(acks) == used, f"stale acknowledgements: {sorted(set(acks) - used)}"
    for key, reason in acks.items():
        assert len(reason) >= 40, key


def test_the_stack_has_every_output_the_spotyolo_commands_read(synth: Synth) -> None:
    from spotyolo.contract.outputs import REQUIRED_OUTPUTS

    missing = [name for name in REQUIRED_OUTPUTS if name not in synth.template["Outputs"]]
    assert missing == [], f"`spotyolo status` and the others would say the stack lacks {missing}"


def test_outputs_give_the_exact_upload_and_retrain_commands(synth: Synth) -> None:
    outputs = synth.template["Outputs"]
    assert {
        "BucketName",
        "StateMachineArn",
        "TopicArn",
        "JobTableName",
        "UploadCommand",
        "RetrainCommand",
        "CancelCommand",
    } <= set(outputs)
    upload = render(outputs["UploadCommand"]["Value"], synth.resources)
    first, last = upload.split(" && ")
    assert first.startswith(f"aws s3 cp ./myjob s3://{BUCKET}/jobs/myjob/ --recursive --exclude config.yaml")
    assert last.startswith(f"aws s3 cp ./myjob/config.yaml s3://{BUCKET}/jobs/myjob/config.yaml")
    retrain = render(outputs["RetrainCommand"]["Value"], synth.resources)
    assert retrain.startswith(f"aws stepfunctions start-execution --state-machine-arn {STATE_MACHINE}")
    assert json.loads(retrain.split("--input ")[1].strip("'")) == {"job": "myjob", "force": True}


def test_readme_deploy_section_uses_real_outputs_and_tags(synth: Synth) -> None:
    """A new user copies these commands: every output they name exists, the FIS steps use the
    tags the stack's template and the launch use."""
    from spotyolo.core.fleet import APP, APP_TAG, INTERRUPT, INTERRUPT_TAG, JOB_TAG

    deploy = (REPO_ROOT / "README.md").read_text().split("## Deploy to AWS", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"OutputKey=='(\w+)'", deploy)) | set(re.findall(r"`(\w+)` output", deploy))
    named |= set(re.findall(r"output `(\w+)`", deploy))
    assert {"BucketName", "InterruptTemplateId", "StateMachineArn", "TrainerLogGroup"} <= named
    assert named <= set(synth.template["Outputs"]), named - set(synth.template["Outputs"])
    assert f"Name=tag:{APP_TAG},Values={APP}" in deploy and f"Name=tag:{JOB_TAG},Values=myjob" in deploy
    assert f"--tags Key={INTERRUPT_TAG},Value={INTERRUPT}" in deploy
    assert "aws fis start-experiment --experiment-template-id $TEMPLATE" in deploy


def test_cfn_lint_is_clean_with_the_rendered_definition(synth: Synth, tmp_path: Path) -> None:
    from cfnlint.api import ManualArgs, lint

    template = json.loads(json.dumps(synth.template))
    sm_id, _ = synth.one("AWS::StepFunctions::StateMachine")
    props = template["Resources"][sm_id]["Properties"]
    props["DefinitionString"] = rendered_definition(synth)
    del props["DefinitionSubstitutions"]
    matches = lint(json.dumps(template), config=ManualArgs(regions=[REGION]))
    # W3005: the DependsOn CDK itself adds next to a GetAtt of the same role (harmless, not ours)
    problems = [
        f"{m.rule.id} {m.message} ({'/'.join(map(str, m.path))})"
        for m in matches
        if not m.rule.id.startswith("I") and m.rule.id != "W3005"
    ]
    assert problems == [], "\n".join(problems)


def test_synth_with_existing_subnets_sms_and_builtin_validation(
    tmp_path: Path, wheels_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other branch (existing VPC + subnets, SMS) with CDK's built-in validation on, for a
    known account and region, as `cdk deploy` synthesizes it (the CLI sets CDK_DEFAULT_ACCOUNT
    and CDK_DEFAULT_REGION from the profile): cdk-nag must stay clean with literal ARNs too."""
    monkeypatch.setenv("CDK_DEFAULT_ACCOUNT", "210987654321")
    monkeypatch.setenv("CDK_DEFAULT_REGION", "ap-southeast-4")
    context: dict[str, Any] = {
        "vpc_id": "vpc-0123456789abcdef0",
        "subnet_ids": "subnet-0123456789abcdef0,subnet-0fedcba987654321f",
        "phone": "+14155550100",
        "lambda_wheels": str(wheels_dir),
        "stack_name": "SpotYolo-team-b",
    }
    if not (REPO_ROOT / "container/Dockerfile").is_file():  # test_trainer_image_* fails then
        context["trainer_image"] = "123456789012.dkr.ecr.us-east-1.amazonaws.com/spotyolo:missing-dockerfile"
    other = synthesize(context, tmp_path / "out", validation=True)
    assert not other.of_type("AWS::EC2::VPC") and not other.of_type("AWS::EC2::FlowLog")
    _, sg = other.one("AWS::EC2::SecurityGroup")
    assert sg["Properties"]["VpcId"] == "vpc-0123456789abcdef0"
    env = next(iter(other.of_type("AWS::Lambda::Function").values()))["Properties"]["Environment"][
        "Variables"
    ]
    assert env["SUBNET_IDS"] == "subnet-0123456789abcdef0,subnet-0fedcba987654321f"
    _, sub = other.one("AWS::SNS::Subscription")
    assert (sub["Properties"]["Protocol"], sub["Properties"]["Endpoint"]) == ("sms", "+14155550100")
    assert all(r["conclusion"] == "success" for r in other.report["pluginReports"]), other.report
    assert "arn:aws:ec2:ap-southeast-4:210987654321:instance/*" in json.dumps(other.template)
    # FIS does not exist in ap-southeast-4: no template, no outputs for it, a warning, a deploy
    assert (
        not other.of_type("AWS::FIS::ExperimentTemplate")
        and "InterruptCommand" not in other.template["Outputs"]
    )
    assert "AWS FIS is not available in ap-southeast-4" in json.dumps(other.metadata)
