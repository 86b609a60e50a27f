"""Kafka as every service uses it: the batch subscriber, validation into dead letters, the
batch publisher, topic admin, delivery of results in Kafka transactions, and the bridge's
request/reply (its price requests and its reply reader)."""
