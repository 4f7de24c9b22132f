"""Where features, predictions, scores and health land: QuestDB, Kafka, or the embedded DuckDB store.

Every table has dedup keys, so writing the same rows again (a replay, a restart after a crash) changes nothing.
"""
