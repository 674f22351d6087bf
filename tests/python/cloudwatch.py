#!/usr/bin/env python3
"""Reads back what hostwatch's CloudWatch sinks wrote to moto_server, for
aggregator/tests/sink_cloudwatch.rs. Prints JSON on stdout.

    cloudwatch.py iam ENDPOINT
        an IAM user with a policy allowing logs:*, cloudwatch:* (and monitoring:*, as moto names
        the CloudWatch actions), and its access key
        (moto runs with INITIAL_NO_AUTH_ACTION_COUNT=3: these three calls are the only
        unsigned ones; everything after is checked)
    cloudwatch.py logs ENDPOINT KEY_ID SECRET GROUP
        {stream: [message, ...]} of the group
    cloudwatch.py metrics ENDPOINT KEY_ID SECRET NAMESPACE
        [{name, dimensions: {..}, values: [..]}] of the namespace
"""

import datetime
import json
import sys

import boto3

REGION = "eu-west-1"


def client(service, endpoint, key_id="unused", secret="unused"):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )


def iam(endpoint):
    iam = client("iam", endpoint)
    iam.create_user(UserName="hostwatch")
    iam.put_user_policy(
        UserName="hostwatch",
        PolicyName="sinks",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": ["logs:*", "cloudwatch:*", "monitoring:*"], "Resource": "*"}
                ],
            }
        ),
    )
    key = iam.create_access_key(UserName="hostwatch")["AccessKey"]
    print(json.dumps({"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}))


def logs(endpoint, key_id, secret, group):
    logs = client("logs", endpoint, key_id, secret)
    streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    result = {}
    for stream in streams:
        name = stream["logStreamName"]
        events = logs.get_log_events(logGroupName=group, logStreamName=name, startFromHead=True)
        result[name] = [event["message"] for event in events["events"]]
    print(json.dumps(result))


def metrics(endpoint, key_id, secret, namespace):
    cloudwatch = client("cloudwatch", endpoint, key_id, secret)
    result = []
    for metric in cloudwatch.list_metrics(Namespace=namespace)["Metrics"]:
        dimensions = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
        stats = cloudwatch.get_metric_statistics(
            Namespace=namespace,
            MetricName=metric["MetricName"],
            Dimensions=metric["Dimensions"],
            StartTime=datetime.datetime(2000, 1, 1),
            EndTime=datetime.datetime(2100, 1, 1),
            Period=60,
            Statistics=["Maximum"],
        )
        values = sorted(point["Maximum"] for point in stats["Datapoints"])
        result.append({"name": metric["MetricName"], "dimensions": dimensions, "values": values})
    result.sort(key=lambda m: (m["name"], sorted(m["dimensions"].items())))
    print(json.dumps(result))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"iam": iam, "logs": logs, "metrics": metrics}[command](*args)
