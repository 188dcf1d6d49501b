"""deploy/ecs/stack.yaml on moto's CloudFormation, and what a test needs to read it back.

The tests (test_stack.py) and scripts/container-test use it. Run with the interpreter of
.local/deploy-tools (scripts/deploy-tools python ...), which has moto, boto3 and cfn-lint.

    python tests/stack/stack.py task-env ENDPOINT MONGODB_URI

deploys the stack on the moto at ENDPOINT and prints the container environment of its
task definition as ECS would give it to the container (the secret resolved), one
NAME=value a line, for `docker run --env-file`.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "deploy" / "ecs" / "stack.yaml"
REGION = "eu-west-1"
ACCOUNT = "123456789012"
CONTAINER = "posts-api"


@functools.cache
def template() -> dict[str, Any]:
    """The stack's template, its short forms (!Ref, !Sub ...) read as their long ones;
    read once. Callers must not change it."""
    return cfn_yaml.loads(TEMPLATE_PATH.read_text())


class Moto:
    """A moto server of the test's own on 127.0.0.1, stopped with the test."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{port}"
        self._log = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "moto_server.py"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto did not listen on {port}")
                time.sleep(0.1)

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)
        self._log.close()


def client(endpoint: str, service: str):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="stack-test",
        aws_secret_access_key="stack-test",
    )


@dataclass
class Account:
    """What the stack needs to exist first: a VPC with two subnets, and the secret."""

    endpoint: str
    vpc_id: str
    subnet_ids: list[str]
    secret_arn: str

    @classmethod
    def prepare(cls, endpoint: str, mongodb_uri: str) -> Account:
        ec2 = client(endpoint, "ec2")
        vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet_ids = [
            ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.0.{n}.0/24", AvailabilityZone=f"{REGION}{zone}")[
                "Subnet"
            ]["SubnetId"]
            for n, zone in ((1, "a"), (2, "b"))
        ]
        secret_arn = client(endpoint, "secretsmanager").create_secret(
            Name=f"posts-api/mongodb-uri-{int(time.time() * 1000)}", SecretString=mongodb_uri
        )["ARN"]
        return cls(endpoint, vpc_id, subnet_ids, secret_arn)

    def required_parameters(self) -> dict[str, str]:
        """The parameters without defaults, as a user following docs/deploy.md sets them."""
        return {
            "ImageUri": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/posts-api:1.0.0",
            "VpcId": self.vpc_id,
            "SubnetIds": ",".join(self.subnet_ids),
            "MongoDbUriSecretArn": self.secret_arn,
            "JwksUrl": "https://idp.example.com/.well-known/jwks.json",
            "JwtIssuer": "https://idp.example.com/",
            "JwtAudience": "https://posts.example.com",
        }


@dataclass
class Stack:
    """A deployed stack, read back through the AWS APIs."""

    endpoint: str
    name: str
    parameters: dict[str, str]
    outputs: dict[str, str] = field(default_factory=dict)
    resources: dict[str, str] = field(default_factory=dict)

    @classmethod
    def deploy(cls, endpoint: str, name: str, parameters: dict[str, str]) -> Stack:
        stack = cls(endpoint, name, dict(parameters))
        stack._cloudformation().create_stack(
            StackName=name,
            TemplateBody=TEMPLATE_PATH.read_text(),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            Capabilities=["CAPABILITY_IAM"],
        )
        stack._settle("CREATE_COMPLETE")
        return stack

    def update(self, **changed: str) -> None:
        """`aws cloudformation deploy` of the same template with some parameters changed."""
        self.parameters.update(changed)
        self._cloudformation().update_stack(
            StackName=self.name,
            UsePreviousTemplate=True,
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in self.parameters.items()],
            Capabilities=["CAPABILITY_IAM"],
        )
        self._settle("UPDATE_COMPLETE")

    def _cloudformation(self):
        return client(self.endpoint, "cloudformation")

    def _settle(self, expected: str) -> None:
        cloudformation = self._cloudformation()
        deadline = time.monotonic() + 60
        while True:
            described = cloudformation.describe_stacks(StackName=self.name)["Stacks"][0]
            if not described["StackStatus"].endswith("_IN_PROGRESS") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if described["StackStatus"] != expected:
            raise RuntimeError(f"{self.name}: {described['StackStatus']} {described.get('StackStatusReason')}")
        self.outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
        self.resources = {
            r["LogicalResourceId"]: r["PhysicalResourceId"]
            for r in cloudformation.list_stack_resources(StackName=self.name)["StackResourceSummaries"]
            if r.get("LogicalResourceId")
        }

    def client(self, service: str):
        return client(self.endpoint, service)

    def service(self) -> dict[str, Any]:
        return self.client("ecs").describe_services(
            cluster=self.outputs["ClusterName"], services=[self.outputs["ServiceName"]]
        )["services"][0]

    def task_definition(self, arn: str | None = None) -> dict[str, Any]:
        return self.client("ecs").describe_task_definition(
            taskDefinition=arn or self.outputs["TaskDefinitionArn"]
        )["taskDefinition"]

    def container(self) -> dict[str, Any]:
        (container,) = [c for c in self.task_definition()["containerDefinitions"] if c["name"] == CONTAINER]
        return container

    def container_environment(self) -> dict[str, str]:
        """The container's environment as ECS starts it: its variables and its secrets,
        each secret read from Secrets Manager by the ARN the task definition names."""
        container = self.container()
        environment = {v["name"]: v["value"] for v in container.get("environment", [])}
        secrets = self.client("secretsmanager")
        for secret in container.get("secrets", []):
            environment[secret["name"]] = secrets.get_secret_value(SecretId=secret["valueFrom"])["SecretString"]
        return environment

    def role_policies(self, logical_id: str) -> list[dict[str, Any]]:
        """Every policy document of a role of the stack: inline and attached."""
        iam = self.client("iam")
        role = self.resources[logical_id].split("/")[-1]
        documents = [
            _document(iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"])
            for name in iam.list_role_policies(RoleName=role)["PolicyNames"]
        ]
        for attached in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]:
            version = iam.get_policy(PolicyArn=attached["PolicyArn"])["Policy"]["DefaultVersionId"]
            documents.append(
                iam.get_policy_version(PolicyArn=attached["PolicyArn"], VersionId=version)["PolicyVersion"]["Document"]
            )
        return documents

    def resolved(self, logical_id: str) -> dict[str, Any]:
        """A resource's properties in the template, resolved with this stack's parameters
        and physical ids: for what moto does not keep (bucket lifecycle, target group
        attributes, deployment configuration, scaling)."""
        document = template()
        return Resolver(document, self).resolve(document["Resources"][logical_id].get("Properties", {}))


def _document(document: dict[str, Any] | str) -> dict[str, Any]:
    """A policy document. moto returns those of a role's `Policies` property as the text
    of a Python dict, not as JSON."""
    return ast.literal_eval(document) if isinstance(document, str) else document


class Resolver:
    """The intrinsic functions the template uses, evaluated as CloudFormation would."""

    def __init__(self, document: dict[str, Any], stack: Stack) -> None:
        self.document = document
        self.stack = stack
        self.parameters = {
            name: stack.parameters.get(name, str(spec.get("Default", "")))
            for name, spec in document["Parameters"].items()
        }
        self.pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::StackName": stack.name,
            "AWS::NoValue": None,
        }

    def ref(self, name: str) -> Any:
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            spec = self.document["Parameters"][name]
            value = self.parameters[name]
            if spec["Type"].startswith("List<") or spec["Type"] == "CommaDelimitedList":
                return [item for item in value.split(",") if item]
            return value
        # moto lists no physical id for some resources (scaling): their logical id stands in.
        return self.stack.resources.get(name, name)

    def get_att(self, name: str, attribute: str) -> str:
        physical = self.stack.resources[name]
        if attribute == "Arn" and self.document["Resources"][name]["Type"] == "AWS::S3::Bucket":
            return f"arn:aws:s3:::{physical}"
        return f"{physical}.{attribute}"

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.document["Conditions"][name]))

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [value for value in map(self.resolve, node) if value is not None]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (function, argument), = node.items()
            if function == "Ref":
                return self.ref(argument)
            if function == "Fn::GetAtt":
                return self.get_att(*(argument.split(".", 1) if isinstance(argument, str) else argument))
            if function == "Fn::FindInMap":
                table, key, attribute = (self.resolve(a) for a in argument)
                return self.document["Mappings"][table][str(key)][attribute]
            if function == "Fn::If":
                name, then, otherwise = argument
                return self.resolve(then if self.condition(name) else otherwise)
            if function == "Fn::Equals":
                left, right = (self.resolve(a) for a in argument)
                return left == right
            if function == "Fn::Not":
                return not self.resolve(argument[0])
            if function == "Fn::Join":
                separator, items = argument
                return separator.join(str(i) for i in self.resolve(items))
            if function == "Fn::Sub":
                text, names = (argument, {}) if isinstance(argument, str) else argument
                names = {k: self.resolve(v) for k, v in names.items()}

                def value(match: re.Match[str]) -> str:
                    name = match.group(1)
                    if name in names:
                        return str(names[name])
                    if "." in name:
                        return self.get_att(*name.split(".", 1))
                    return str(self.ref(name))

                return re.sub(r"\$\{([^}]+)\}", value, text)
            if function == "Condition":
                return self.condition(argument)
        resolved = {key: self.resolve(value) for key, value in node.items()}
        return {key: value for key, value in resolved.items() if value is not None}


def main(arguments: list[str]) -> int:
    if len(arguments) != 3 or arguments[0] != "task-env":
        print(__doc__, file=sys.stderr)
        return 64
    endpoint, mongodb_uri = arguments[1], arguments[2]
    account = Account.prepare(endpoint, mongodb_uri)
    stack = Stack.deploy(endpoint, f"posts-api-{os.getpid()}", account.required_parameters())
    for name, value in stack.container_environment().items():
        if "\n" in value:
            raise ValueError(f"{name} spans lines")
        print(f"{name}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
