"""The fault suite: the processes users run (venue server, ``flows.ingest``, Kafka, ``flows.features``, QuestDB), each
scenario injecting one kind of fault, every result compared row for row with ``ccf backtest`` over the same capture.

``python -m tests.faults`` (or ``make faults``) runs every scenario and writes ``benchmarks/results/faults.json``;
``tests/faults/test_faults.py`` asserts the criteria (one short scenario in the normal run, all of them with
``CCF_FAULTS_FULL=1``).
"""
