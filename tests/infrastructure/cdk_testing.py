"""Helpers of the infrastructure tests: synthesize the app, read its outputs, render intrinsics."""

from __future__ import annotations

import json
import os
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

TEST_CONTEXT: dict[str, Any] = {
    "email": "ml-team@example.com",
    "instance_types": "g6.xlarge,g5.xlarge",
    "root_volume_gb": "80",
    "log_retention_days": "14",
}


def repack_installed(requirement: str, folder: Path) -> Path:
    """The wheel ``requirement`` was installed from, rebuilt from the venv's files (its tags from
    the dist-info ``WHEEL``): the Lambda's packages for *this* interpreter, offline."""
    from importlib.metadata import distribution

    name, _, version = requirement.partition("==")
    dist = distribution(name)
    assert dist.version == version, f"{requirement}: the venv has {dist.version}"
    tags = [
        t.split(":", 1)[1].strip()
        for t in (dist.read_text("WHEEL") or "").splitlines()
        if t.startswith("Tag:")
    ]
    parts = [".".join(sorted({t.split("-")[i] for t in tags})) for i in range(3)]
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name.replace('-', '_')}-{version}-{'-'.join(parts)}.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for file in dist.files or []:
            if file.parts[0] != ".." and "__pycache__" not in file.parts:
                zf.write(Path(str(file.locate())), str(file))
    return wheel


def top_level_modules(dist_name: str) -> set[str]:
    """The importable top-level names an installed distribution provides."""
    from importlib.metadata import distribution

    names = set()
    for file in distribution(dist_name).files or []:
        first = file.parts[0]
        if first != ".." and not first.endswith((".dist-info", ".pth")) and first != "__pycache__":
            names.add(first)
    return names


@dataclass
class Synth:
    outdir: Path
    template: dict[str, Any]
    resources: dict[str, dict[str, Any]]
    report: dict[str, Any]
    metadata: dict[str, Any]
    assets: dict[str, Any]
    context: dict[str, Any]
    seconds: float

    def of_type(self, cfn_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v["Type"] == cfn_type}

    def one(self, cfn_type: str) -> tuple[str, dict[str, Any]]:
        found = self.of_type(cfn_type)
        assert len(found) == 1, f"expected one {cfn_type}, found {sorted(found)}"
        return next(iter(found.items()))

    def function_ids(self) -> dict[str, str]:
        """Lambda module name -> logical id (from the handler string)."""
        return {
            v["Properties"]["Handler"].split(".")[1]: k
            for k, v in self.of_type("AWS::Lambda::Function").items()
        }


def synthesize(context: dict[str, Any], outdir: Path, *, validation: bool) -> Synth:
    from cdk.app import build_app

    start = time.perf_counter()
    app, stack = build_app(context, outdir=str(outdir), validation=validation)
    app.synth()
    seconds = time.perf_counter() - start
    name = stack.artifact_id

    def load(file: str) -> Any:
        return json.loads((outdir / file).read_text())

    template = load(f"{name}.template.json")
    return Synth(
        outdir=outdir,
        template=template,
        resources=template["Resources"],
        report=load("validation-report.json"),
        metadata=load(f"{name}.metadata.json"),
        assets=load(f"{name}.assets.json"),
        context=context,
        seconds=seconds,
    )


# --- rendering CloudFormation intrinsics with fake values (for cfn-lint and pattern tests)
ACCOUNT, REGION = "123456789012", "us-east-1"


def fake_value(resources: dict[str, Any], logical_id: str, attribute: str | None = None) -> str:
    """A plausible value for Ref / GetAtt of a resource, so rendered JSON looks deployed."""
    if logical_id.startswith("AWS::"):
        return {
            "AWS::Partition": "aws",
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": "SpotYolo",
        }[logical_id]
    if logical_id not in resources:  # a template parameter (SSM values)
        return f"param-{logical_id[:20]}"
    cfn_type = resources[logical_id]["Type"]
    name = logical_id.lower()[:40]
    if cfn_type == "AWS::Lambda::Function":
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}" if attribute == "Arn" else name
    if cfn_type == "AWS::SNS::Topic":
        return f"arn:aws:sns:{REGION}:{ACCOUNT}:{name}"
    if cfn_type == "AWS::StepFunctions::StateMachine":
        return f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}"
    if cfn_type == "AWS::IAM::Role" and attribute == "Arn":
        return f"arn:aws:iam::{ACCOUNT}:role/{name}"
    if cfn_type == "AWS::S3::Bucket":
        return f"arn:aws:s3:::{name}" if attribute == "Arn" else name
    if cfn_type == "AWS::SQS::Queue" and attribute == "Arn":
        return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"
    return f"{name}-{attribute or 'ref'}"


def render(value: Any, resources: dict[str, Any]) -> Any:
    """Resolve Ref / Fn::GetAtt / Fn::Join / Fn::Select in ``value`` with fake values."""
    if isinstance(value, list):
        return [render(v, resources) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Ref"}:
        return fake_value(resources, value["Ref"])
    if set(value) == {"Fn::GetAtt"}:
        logical_id, attribute = value["Fn::GetAtt"]
        return fake_value(resources, logical_id, attribute)
    if set(value) == {"Fn::Join"}:
        sep, parts = value["Fn::Join"]
        return sep.join(str(render(p, resources)) for p in parts)
    if set(value) == {"Fn::Select"}:
        index, items = value["Fn::Select"]
        rendered = render(items, resources)
        return rendered[int(index)] if isinstance(rendered, list) else f"{rendered}-{index}"
    if set(value) == {"Fn::GetAZs"}:
        return ["us-east-1a", "us-east-1b", "us-east-1c"]
    return {k: render(v, resources) for k, v in value.items()}
