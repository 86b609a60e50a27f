"""Kafka as every service uses it: the batch subscriber, validation into dead letters, the
batch publisher, topic admin, and delivery of results in Kafka transactions."""
