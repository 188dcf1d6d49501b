"""deploy/ecs/stack.yaml deployed on moto's CloudFormation and read back through the AWS
APIs, as a user following docs/deploy.md would deploy it.

moto keeps only part of what the template asks for. What it drops (the bucket's lifecycle,
CORS and policy, the service's deployment configuration, target group attributes,
Container Insights, scaling) is checked in the template, resolved with the stack's own
parameters and physical ids.

Run by scripts/check-deploy (scripts/deploy-tools python tests/stack/run.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
import unittest
from pathlib import Path

from stack import ACCOUNT, CONTAINER, ROOT, Account, Moto, Stack, client, template

BINARY = Path(os.environ.get("POSTS_API_BIN", ROOT / "target" / "debug" / "posts-api"))
# What Secrets Manager holds in the tests; the configuration loader only needs a URI.
MONGODB_URI = "mongodb+srv://posts:secret@cluster.example.net/?retryWrites=true"


def effective_configuration(environment: dict[str, str]) -> dict:
    """`posts-api config` run with exactly `environment`: the configuration the task's
    container would start with. Fails the test where the service would exit."""
    run = subprocess.run(
        [str(BINARY), "config"],
        env={**environment, "APP_CONFIG_DIR": str(ROOT / "config"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    if run.returncode != 0:
        raise AssertionError(f"the container would exit at start-up: {run.stderr.strip()}")
    return tomllib.loads(run.stdout)


def parliament_findings(document: dict) -> list:
    run = subprocess.run(
        [str(Path(os.sys.executable).parent / "parliament"), "--json", "--string", json.dumps(document)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return [json.loads(line) for line in run.stdout.splitlines() if line.strip()]


def actions(statement: dict) -> set[str]:
    action = statement["Action"]
    return {action} if isinstance(action, str) else set(action)


def resources(statement: dict) -> list[str]:
    resource = statement["Resource"]
    return [resource] if isinstance(resource, str) else list(resource)


class StackTest(unittest.TestCase):
    moto: Moto
    account: Account
    stack: Stack

    @classmethod
    def setUpClass(cls) -> None:
        if not BINARY.is_file():
            raise unittest.SkipTest(f"build posts-api first ({BINARY})")
        cls.moto = Moto()
        cls.account = Account.prepare(cls.moto.endpoint, MONGODB_URI)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.moto.stop()

    def deploy(self, name: str, **parameters: str) -> Stack:
        return Stack.deploy(self.moto.endpoint, name, {**self.account.required_parameters(), **parameters})


class TheDefaultStack(StackTest):
    """Only the required parameters: the task role reaches S3 itself, plain HTTP."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.stack = Stack.deploy(cls.moto.endpoint, "posts-api", cls.account.required_parameters())
        cls.configuration = effective_configuration(cls.stack.container_environment())

    def test_every_output_the_guide_names_is_set(self):
        for output in ["ServiceUrl", "BucketName", "ClusterName", "ServiceName", "TaskDefinitionArn"]:
            self.assertTrue(self.stack.outputs.get(output), output)
        self.assertTrue(self.stack.outputs["ServiceUrl"].startswith("http://"))

    def test_the_service_runs_the_stacks_task_definition(self):
        self.assertEqual(self.stack.service()["taskDefinition"], self.stack.outputs["TaskDefinitionArn"])

    def test_the_container_environment_is_a_production_configuration_of_the_stacks_bucket(self):
        configuration = self.configuration
        self.assertEqual(configuration["log"]["format"], "json", "APP_ENV=production")
        self.assertFalse(configuration["auth"]["disabled"])
        self.assertEqual(configuration["auth"]["jwks_url"], self.stack.parameters["JwksUrl"])
        self.assertEqual(configuration["s3"]["bucket"], self.stack.outputs["BucketName"])
        self.assertEqual(configuration["s3"]["key_prefix"], "posts")
        self.assertEqual(configuration["aws"]["region"], "eu-west-1")
        self.assertEqual(configuration["aws"]["role_arn"], "", "the task role itself, no AssumeRole")
        self.assertEqual(configuration["server"]["cors_allowed_origins"], [])

    def test_the_mongodb_uri_comes_from_the_secret_named_by_its_full_arn(self):
        (secret,) = self.stack.container()["secrets"]
        self.assertEqual(secret["name"], "MONGODB_URI")
        self.assertEqual(secret["valueFrom"], self.account.secret_arn)
        self.assertRegex(secret["valueFrom"], r"^arn:aws:secretsmanager:eu-west-1:\d{12}:secret:")

    def test_a_bare_secret_name_is_refused_before_anything_is_created(self):
        pattern = template()["Parameters"]["MongoDbUriSecretArn"]["AllowedPattern"]
        self.assertIsNone(re.match(pattern, "posts-api/mongodb-uri"))
        self.assertIsNotNone(re.match(pattern, self.account.secret_arn))

    def test_the_task_role_may_use_exactly_the_s3_actions_of_the_template_on_the_bucket_and_prefix(self):
        (policy,) = self.stack.role_policies("TaskRole")
        wanted = self.stack.resolved("S3AccessPolicy")["PolicyDocument"]
        self.assertEqual(policy["Statement"], wanted["Statement"])
        bucket = f"arn:aws:s3:::{self.stack.outputs['BucketName']}"
        for statement in policy["Statement"]:
            self.assertEqual(statement["Effect"], "Allow")
            for resource in resources(statement):
                self.assertIn(resource, [bucket, f"{bucket}/posts/*"])
        self.assertEqual(parliament_findings(policy), [])

    def test_the_execution_role_may_read_its_secret_write_its_logs_and_pull_images_only(self):
        (policy,) = self.stack.role_policies("ExecutionRole")
        granted = {action for statement in policy["Statement"] for action in actions(statement)}
        self.assertEqual(
            granted,
            {
                "ecr:GetAuthorizationToken",
                "ecr:BatchCheckLayerAvailability",
                "ecr:BatchGetImage",
                "ecr:GetDownloadUrlForLayer",
                "logs:CreateLogStream",
                "logs:PutLogEvents",
                "secretsmanager:GetSecretValue",
            },
        )
        by_sid = {statement["Sid"]: statement for statement in policy["Statement"]}
        self.assertEqual(by_sid["ReadTheMongoDbUri"]["Resource"], self.account.secret_arn)
        self.assertEqual(
            by_sid["WriteLogs"]["Resource"],
            f"arn:aws:logs:eu-west-1:{ACCOUNT}:log-group:{self.stack.outputs['LogGroupName']}:*",
        )
        self.assertEqual(parliament_findings(policy), [])

    def test_the_load_balancer_checks_liveness_on_the_port_the_service_listens_on(self):
        elbv2 = self.stack.client("elbv2")
        (group,) = elbv2.describe_target_groups(TargetGroupArns=[self.stack.resources["TargetGroup"]])[
            "TargetGroups"
        ]
        self.assertEqual(group["TargetType"], "ip")
        # /healthz stays 200 while MongoDB, STS or S3 is down (crates/api/tests/api/ops.rs).
        self.assertEqual(group["HealthCheckPath"], "/healthz")
        self.assertEqual(group["HealthCheckPort"], "traffic-port")
        self.assertEqual(group["Port"], self.configuration["server"]["port"])
        ports = {mapping["name"]: mapping["containerPort"] for mapping in self.stack.container()["portMappings"]}
        self.assertEqual(ports["http"], self.configuration["server"]["port"])
        self.assertEqual(ports["management"], self.configuration["server"]["management_port"])
        self.assertNotEqual(ports["management"], ports["http"], "/readyz and /metrics off the routed port")

    def test_the_tasks_are_reached_only_from_the_load_balancer_and_never_on_the_management_port(self):
        ec2 = self.stack.client("ec2")
        (tasks,) = ec2.describe_security_groups(GroupIds=[self.stack.resources["ServiceSecurityGroup"]])[
            "SecurityGroups"
        ]
        (rule,) = tasks["IpPermissions"]
        self.assertEqual((rule["FromPort"], rule["ToPort"]), (8080, 8080))
        self.assertEqual(rule["IpRanges"], [])
        self.assertEqual(
            [pair["GroupId"] for pair in rule["UserIdGroupPairs"]],
            [self.stack.resources["LoadBalancerSecurityGroup"]],
        )

    def test_plain_http_is_served_when_no_certificate_is_given(self):
        elbv2 = self.stack.client("elbv2")
        (listener,) = elbv2.describe_listeners(LoadBalancerArn=self.stack.resources["LoadBalancer"])["Listeners"]
        self.assertEqual((listener["Port"], listener["Protocol"]), (80, "HTTP"))
        self.assertEqual(listener["DefaultActions"][0]["Type"], "forward")

    def test_the_stop_timeout_and_the_deregistration_delay_cover_the_shutdown_grace(self):
        grace = self.configuration["server"]["shutdown_grace_secs"]
        self.assertGreater(self.stack.container()["stopTimeout"], grace)
        attributes = {
            a["Key"]: a["Value"] for a in self.stack.resolved("TargetGroup")["TargetGroupAttributes"]
        }
        self.assertGreaterEqual(int(attributes["deregistration_delay.timeout_seconds"]), grace)

    def test_without_a_clamd_image_the_task_runs_the_service_alone_and_scans_nothing(self):
        containers = self.stack.task_definition()["containerDefinitions"]
        self.assertEqual([c["name"] for c in containers], [CONTAINER])
        self.assertFalse(self.stack.container().get("dependsOn"))
        self.assertEqual(self.configuration["scan"]["clamd_address"], "")

    def test_the_container_health_check_probes_liveness(self):
        self.assertEqual(self.stack.container()["healthCheck"]["command"], ["CMD", "posts-api", "healthcheck"])

    def test_the_container_runs_read_only_as_the_images_user(self):
        container = self.stack.container()
        self.assertTrue(container["readonlyRootFilesystem"])
        self.assertEqual(container["user"], "10001")
        self.assertEqual(container["logConfiguration"]["options"]["awslogs-group"], self.stack.outputs["LogGroupName"])

    def test_the_log_group_keeps_a_month(self):
        (group,) = self.stack.client("logs").describe_log_groups(
            logGroupNamePrefix=self.stack.outputs["LogGroupName"]
        )["logGroups"]
        self.assertEqual(group["retentionInDays"], 30)

    def test_the_bucket_is_encrypted_private_and_reached_over_tls_only(self):
        encryption = self.stack.client("s3").get_bucket_encryption(Bucket=self.stack.outputs["BucketName"])
        rule = encryption["ServerSideEncryptionConfiguration"]["Rules"][0]
        self.assertEqual(rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"], "AES256")
        bucket = self.stack.resolved("AttachmentsBucket")
        self.assertTrue(all(bucket["PublicAccessBlockConfiguration"].values()))
        self.assertEqual(len(bucket["PublicAccessBlockConfiguration"]), 4)
        self.assertNotIn("CorsConfiguration", bucket, "no origins given, no CORS")
        (deny,) = self.stack.resolved("AttachmentsBucketPolicy")["PolicyDocument"]["Statement"]
        self.assertEqual((deny["Effect"], deny["Condition"]), ("Deny", {"Bool": {"aws:SecureTransport": "false"}}))
        arn = f"arn:aws:s3:::{self.stack.outputs['BucketName']}"
        self.assertEqual(deny["Resource"], [arn, f"{arn}/*"])

    def test_the_bucket_keeps_unfinished_uploads_longer_than_the_service_does(self):
        for days in template()["Parameters"]["ResumableUploadDays"]["AllowedValues"]:
            with self.subTest(ResumableUploadDays=days):
                stack = Stack(self.stack.endpoint, self.stack.name, {**self.stack.parameters, "ResumableUploadDays": days})
                stack.resources = self.stack.resources
                environment = {
                    v["Name"]: v["Value"]
                    for v in stack.resolved("TaskDefinition")["ContainerDefinitions"][0]["Environment"]
                }
                settings = effective_configuration({**environment, "MONGODB_URI": MONGODB_URI})["uploads"]
                rules = {r["Id"]: r for r in stack.resolved("AttachmentsBucket")["LifecycleConfiguration"]["Rules"]}
                day = 86400
                resumable = settings["resumable_ttl_secs"]
                incomplete = rules["abort-incomplete-multipart-uploads"]
                self.assertEqual(incomplete["Prefix"], "posts/")
                self.assertGreater(incomplete["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] * day, resumable)
                tails = rules["expire-resumable-upload-tails"]
                self.assertEqual(tails["Prefix"], "posts/resumable/")
                self.assertGreater(tails["ExpirationInDays"] * day, resumable)
                staging = rules["expire-staged-direct-uploads"]
                self.assertEqual(staging["Prefix"], "posts/staging/")
                self.assertGreater(staging["ExpirationInDays"] * day, settings["pending_ttl_secs"])

    def test_deployments_keep_full_capacity_and_roll_back_by_themselves(self):
        service = self.stack.resolved("Service")
        self.assertEqual(
            service["DeploymentConfiguration"],
            {
                "MinimumHealthyPercent": 100,
                "MaximumPercent": 200,
                "DeploymentCircuitBreaker": {"Enable": True, "Rollback": True},
            },
        )
        self.assertGreaterEqual(service["HealthCheckGracePeriodSeconds"], 30)
        self.assertEqual(service["LaunchType"], "FARGATE")
        self.assertNotIn("DesiredCount", service, "autoscaling owns the count")
        self.assertEqual(
            service["LoadBalancers"],
            [{"ContainerName": CONTAINER, "ContainerPort": 8080, "TargetGroupArn": self.stack.resources["TargetGroup"]}],
        )

    def test_autoscaling_tracks_cpu_and_requests_per_task_between_min_and_max(self):
        target = self.stack.resolved("ScalableTarget")
        self.assertEqual((target["MinCapacity"], target["MaxCapacity"]), ("2", "10"))
        cpu = self.stack.resolved("CpuScaling")["TargetTrackingScalingPolicyConfiguration"]
        self.assertEqual(cpu["PredefinedMetricSpecification"]["PredefinedMetricType"], "ECSServiceAverageCPUUtilization")
        requests = self.stack.resolved("RequestScaling")["TargetTrackingScalingPolicyConfiguration"]
        metric = requests["PredefinedMetricSpecification"]
        self.assertEqual(metric["PredefinedMetricType"], "ALBRequestCountPerTarget")
        load_balancer, target_group = self.stack.resources["LoadBalancer"], self.stack.resources["TargetGroup"]
        self.assertEqual(
            metric["ResourceLabel"], f"{load_balancer}.LoadBalancerFullName/{target_group}.TargetGroupFullName"
        )

    def test_the_cluster_has_container_insights(self):
        self.assertEqual(
            self.stack.resolved("Cluster")["ClusterSettings"], [{"Name": "containerInsights", "Value": "enabled"}]
        )


class TheAssumeRoleMode(StackTest):
    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.stack = Stack.deploy(
            cls.moto.endpoint, "posts-api-assume", {**cls.account.required_parameters(), "S3Access": "AssumeRole"}
        )

    def test_the_task_role_may_only_assume_the_s3_role(self):
        (policy,) = self.stack.role_policies("TaskRole")
        (statement,) = policy["Statement"]
        self.assertEqual(actions(statement), {"sts:AssumeRole"})
        s3_role = self.stack.outputs["S3RoleArn"]
        self.assertEqual(statement["Resource"], s3_role)
        self.assertEqual(parliament_findings(policy), [])

    def test_the_s3_role_trusts_the_task_role_and_holds_the_s3_permissions(self):
        iam = self.stack.client("iam")
        role = iam.get_role(RoleName=self.stack.resources["S3AccessRole"])["Role"]
        (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
        task_role = iam.get_role(RoleName=self.stack.resources["TaskRole"])["Role"]["Arn"]
        self.assertEqual(trust["Principal"], {"AWS": task_role})
        (policy,) = self.stack.role_policies("S3AccessRole")
        self.assertEqual(policy["Statement"], self.stack.resolved("S3AccessPolicy")["PolicyDocument"]["Statement"])

    def test_the_service_assumes_the_s3_role_for_at_most_an_hour(self):
        configuration = effective_configuration(self.stack.container_environment())
        self.assertEqual(configuration["aws"]["role_arn"], self.stack.outputs["S3RoleArn"])
        self.assertLessEqual(configuration["aws"]["session_duration_secs"], 3600, "role chaining")


class TheOptions(StackTest):
    """HTTPS, browser origins, a metrics scraper and a customer managed key, together."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        endpoint = cls.moto.endpoint
        cls.certificate = client(endpoint, "acm").request_certificate(DomainName="posts.example.com")[
            "CertificateArn"
        ]
        cls.scraper = client(endpoint, "ec2").create_security_group(
            GroupName="prometheus", Description="scrapes /metrics", VpcId=cls.account.vpc_id
        )["GroupId"]
        cls.stack = Stack.deploy(
            endpoint,
            "posts-api-options",
            {
                **cls.account.required_parameters(),
                "CertificateArn": cls.certificate,
                "CorsAllowedOrigins": "https://app.example.com,https://admin.example.com",
                "MetricsScraperSecurityGroupId": cls.scraper,
                "MongoDbUriSecretKmsKeyArn": f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/secret-key",
            },
        )

    def test_https_serves_with_the_certificate_and_http_redirects_to_it(self):
        elbv2 = self.stack.client("elbv2")
        listeners = {
            listener["Port"]: listener
            for listener in elbv2.describe_listeners(LoadBalancerArn=self.stack.resources["LoadBalancer"])["Listeners"]
        }
        self.assertEqual(listeners[443]["Protocol"], "HTTPS")
        self.assertEqual(listeners[443]["Certificates"], [{"CertificateArn": self.certificate}])
        redirect = listeners[80]["DefaultActions"][0]
        self.assertEqual(redirect["Type"], "redirect")
        self.assertEqual(redirect["RedirectConfig"]["Protocol"], "HTTPS")
        self.assertTrue(self.stack.outputs["ServiceUrl"].startswith("https://"))

    def test_only_the_scraper_reaches_the_management_port(self):
        ec2 = self.stack.client("ec2")
        (tasks,) = ec2.describe_security_groups(GroupIds=[self.stack.resources["ServiceSecurityGroup"]])[
            "SecurityGroups"
        ]
        sources = {
            rule["FromPort"]: [pair["GroupId"] for pair in rule["UserIdGroupPairs"]] for rule in tasks["IpPermissions"]
        }
        self.assertEqual(sources, {8080: [self.stack.resources["LoadBalancerSecurityGroup"]], 9090: [self.scraper]})

    def test_browsers_of_the_listed_origins_may_call_the_api_and_put_straight_to_the_bucket(self):
        origins = ["https://app.example.com", "https://admin.example.com"]
        (rule,) = self.stack.resolved("AttachmentsBucket")["CorsConfiguration"]["CorsRules"]
        self.assertEqual(rule["AllowedOrigins"], origins)
        self.assertIn("PUT", rule["AllowedMethods"])
        configuration = effective_configuration(self.stack.container_environment())
        self.assertEqual(configuration["server"]["cors_allowed_origins"], origins)

    def test_the_execution_role_may_decrypt_the_secret_with_its_key(self):
        decrypt = [
            statement
            for policy in self.stack.role_policies("ExecutionRole")
            for statement in policy["Statement"]
            if "kms:Decrypt" in actions(statement)
        ]
        self.assertEqual([s["Resource"] for s in decrypt], [f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/secret-key"])


class TheScanner(StackTest):
    """A clamd image: the sidecar every file is scanned by."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.stack = Stack.deploy(
            cls.moto.endpoint,
            "posts-api-scanner",
            {
                **cls.account.required_parameters(),
                "ClamdImageUri": f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/clamav:stable",
                "Memory": "3072",
            },
        )

    def test_clamd_runs_beside_the_service_and_the_service_scans_with_it(self):
        containers = {c["name"]: c for c in self.stack.task_definition()["containerDefinitions"]}
        self.assertEqual(sorted(containers), ["clamd", CONTAINER])
        clamd = containers["clamd"]
        self.assertTrue(clamd["essential"])
        self.assertEqual(clamd["image"], self.stack.parameters["ClamdImageUri"])
        self.assertEqual(clamd["logConfiguration"]["options"]["awslogs-stream-prefix"], "clamd")
        configuration = effective_configuration(self.stack.container_environment())
        self.assertEqual(configuration["scan"]["clamd_address"], "127.0.0.1:3310")

    def test_the_service_starts_once_clamd_has_loaded_its_signatures(self):
        clamd = next(c for c in self.stack.task_definition()["containerDefinitions"] if c["name"] == "clamd")
        self.assertEqual(clamd["healthCheck"]["command"], ["CMD", "clamdcheck.sh"])
        self.assertEqual(
            self.stack.container()["dependsOn"], [{"containerName": "clamd", "condition": "HEALTHY"}]
        )


class AnUpdate(StackTest):
    def test_a_new_image_becomes_a_new_task_definition_revision_on_the_service(self):
        stack = self.deploy("posts-api-update")
        first = stack.outputs["TaskDefinitionArn"]

        stack.update(ImageUri=f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/posts-api:1.0.1")

        second = stack.outputs["TaskDefinitionArn"]
        self.assertNotEqual(second, first)
        self.assertEqual(second.rsplit(":", 1)[0], first.rsplit(":", 1)[0], "the same family")
        self.assertEqual(int(second.rsplit(":", 1)[1]), int(first.rsplit(":", 1)[1]) + 1)
        self.assertEqual(stack.service()["taskDefinition"], second)
        self.assertEqual(stack.task_definition(first)["status"], "INACTIVE", "rolled over, not kept in use")


if __name__ == "__main__":
    unittest.main()
