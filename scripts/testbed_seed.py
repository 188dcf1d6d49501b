"""Seed a moto server with the IAM user, roles and bucket the testbed promises.

Usage: testbed_seed.py ENDPOINT BUCKET
Prints `ACCESS_KEY_ID SECRET_ACCESS_KEY` of the seeded user on stdout: a fresh key, the
user's earlier ones deleted. Running it again against the same server is harmless.
The bucket lets browsers of the origins in BUCKET_CORS_ORIGINS and
APP__SERVER__CORS_ALLOWED_ORIGINS (comma-separated) PUT and GET presigned URLs.
"""
import json
import os
import sys

import boto3
from botocore.exceptions import ClientError

ACCOUNT = "123456789012"
USER = "posts-api-dev"
REGION = "us-east-1"


def trust(principal):
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": principal}, "Action": "sts:AssumeRole"}],
    })


def allow(actions, resources):
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resources}],
    })


def unless_exists(call, **kwargs):
    """Runs a create call, treating "it already exists" as done."""
    try:
        return call(**kwargs)
    except ClientError as error:
        if error.response["Error"]["Code"] in ("EntityAlreadyExists", "BucketAlreadyOwnedByYou"):
            return None
        raise


def main():
    endpoint, bucket = sys.argv[1], sys.argv[2]
    session = boto3.session.Session(aws_access_key_id="seed", aws_secret_access_key="seed", region_name=REGION)
    iam = session.client("iam", endpoint_url=endpoint)
    s3 = session.client("s3", endpoint_url=endpoint)

    unless_exists(iam.create_user, UserName=USER)
    for old in iam.list_access_keys(UserName=USER)["AccessKeyMetadata"]:
        iam.delete_access_key(UserName=USER, AccessKeyId=old["AccessKeyId"])
    key = iam.create_access_key(UserName=USER)["AccessKey"]
    iam.put_user_policy(
        UserName=USER,
        PolicyName="assume-posts-api-roles",
        PolicyDocument=allow(["sts:AssumeRole", "sts:GetCallerIdentity"], "*"),
    )

    bucket_arn = f"arn:aws:s3:::{bucket}"
    # moto authorizes HeadBucket as the action `s3:HeadBucket`; AWS authorizes it by
    # `s3:ListBucket`. Granting both keeps the emulator as strict as AWS and no stricter.
    user_arn = f"arn:aws:iam::{ACCOUNT}:user/{USER}"
    roles = {
        "posts-api-role": (
            user_arn,
            allow(
                [
                    "s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                    "s3:ListBucket", "s3:HeadBucket", "s3:ListBucketMultipartUploads",
                    "s3:ListMultipartUploadParts",
                ],
                [bucket_arn, f"{bucket_arn}/*"],
            ),
        ),
        "posts-api-readonly": (user_arn, allow(["s3:GetObject", "s3:ListBucket", "s3:HeadBucket"], [bucket_arn, f"{bucket_arn}/*"])),
        "posts-api-untrusted": ("arn:aws:iam::999999999999:root", allow(["s3:*"], "*")),
    }
    for name, (principal, policy) in roles.items():
        unless_exists(iam.create_role, RoleName=name, AssumeRolePolicyDocument=trust(principal))
        iam.put_role_policy(RoleName=name, PolicyName="s3", PolicyDocument=policy)

    unless_exists(s3.create_bucket, Bucket=bucket)
    origins = [
        origin.strip()
        for variable in ("BUCKET_CORS_ORIGINS", "APP__SERVER__CORS_ALLOWED_ORIGINS")
        for origin in os.environ.get(variable, "").split(",")
        if origin.strip()
    ]
    if origins:
        s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [{
            "AllowedOrigins": origins,
            "AllowedMethods": ["PUT", "GET", "HEAD"],
            "AllowedHeaders": ["content-type"],
            "ExposeHeaders": ["ETag"],
            "MaxAgeSeconds": 3600,
        }]})
    print(key["AccessKeyId"], key["SecretAccessKey"])


if __name__ == "__main__":
    main()
