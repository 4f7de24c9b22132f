"""Local Kafka 4 (KRaft), QuestDB 9 and MLflow servers for development and tests: ``ccf services up|down|status``.

Modules: :mod:`~ccf.services.maven` fetches and caches jars, :mod:`~ccf.services.kafka`, :mod:`~ccf.services.questdb`
and :mod:`~ccf.services.mlflow_server` know how to configure, launch and probe each server,
:mod:`~ccf.services.manager` starts, reuses and stops them, :mod:`~ccf.services.state` records them, and
:mod:`~ccf.services.cli` is the command. Importing any of them starts nothing.
"""
