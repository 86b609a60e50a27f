"""The infrastructure every component uses, knowing no component: settings, Kafka
(``kafka/``), PostgreSQL (``postgres/``), the MLflow registry, the model slot, the HTTP face
of a consuming service, and the datasets. See docs/architecture.md."""
