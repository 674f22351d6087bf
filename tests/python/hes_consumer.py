#!/usr/bin/env python3
"""An independent consumer of hostwatch's health events, for tests/tests/sinks_kafka.rs.

    hes_consumer.py create BROKERS TOPIC
    hes_consumer.py watch BROKERS TOPIC INSTANCE_ID SCHEMA INTERVAL_S

`create` makes the topic (one partition). `watch` reads the topic from the start with
confluent-kafka and checks, failing (exit 1) on the first violation or after 60 s:
- every message validates against the schema file, is on TOPIC and keyed by its
  service_instance.id, which is INSTANCE_ID;
- the node's first event says OK (printed as `seen OK`, the test's cue to trip a rule);
- a WARNING follows sooner than the interval after the last OK (sent on the change,
  not by the periodic repeat);
- the WARNING is repeated (the periodic send), no sooner than half the interval.
"""

import json
import sys
import time

import jsonschema
from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic


def create(brokers, topic):
    admin = AdminClient({"bootstrap.servers": brokers})
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    for future in futures.values():
        future.result(30)
    print(f"created {topic}", flush=True)


def fail(message):
    print(f"FAIL: {message}", flush=True)
    sys.exit(1)


def watch(brokers, topic, instance_id, schema_path, interval):
    with open(schema_path) as file:
        schema = json.load(file)
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": "hes-consumer-test",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    deadline = time.time() + 60
    last_ok = None
    warnings = []
    count = 0
    try:
        while time.time() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            if message.error():
                if message.error().retriable() or "UNKNOWN_TOPIC" in str(message.error()):
                    continue
                raise KafkaException(message.error())
            received = time.time()
            count += 1
            if message.topic() != topic:
                fail(f"message on topic {message.topic()}, expected {topic}")
            event = json.loads(message.value())
            try:
                jsonschema.validate(event, schema)
            except jsonschema.ValidationError as error:
                fail(f"message {count} does not match the schema: {error.message}: {event}")
            key = message.key().decode() if message.key() else None
            if key != event["service_instance"]["id"] or key != instance_id:
                fail(f"message {count} has key {key!r}, expected {instance_id!r}")
            status = event["health_status"]
            print(f"received {status} {event['timestamp']} {event['health_description']}", flush=True)
            if status == "OK" and not warnings:
                if last_ok is None:
                    print("seen OK", flush=True)
                last_ok = received
            elif status == "WARNING":
                if last_ok is None:
                    fail("a WARNING before any OK")
                if not warnings and received - last_ok >= interval:
                    fail(
                        f"the WARNING came {received - last_ok:.1f} s after the last OK: "
                        "with the periodic repeat, not on the status change"
                    )
                warnings.append(received)
                if len(warnings) == 2:
                    gap = warnings[1] - warnings[0]
                    if gap < interval / 2:
                        fail(f"the WARNING was repeated after {gap:.1f} s, under half the interval")
                    print(f"OK: {count} messages valid; change sent at once; repeated after {gap:.1f} s", flush=True)
                    return
            else:
                fail(f"unexpected status {status} after the WARNING")
        fail(f"timed out: {count} messages, last OK at {last_ok}, warnings at {warnings}")
    finally:
        consumer.close()


def main():
    if sys.argv[1] == "create":
        create(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "watch":
        watch(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], float(sys.argv[6]))
    else:
        fail(f"unknown command {sys.argv[1]}")


if __name__ == "__main__":
    main()
