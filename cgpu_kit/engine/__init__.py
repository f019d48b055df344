"""The engine: carries one batch through a transport, step by step. A job type says WHAT; the manager says WHEN
and HOW OFTEN (a :class:`~cgpu_kit.clock.Pacing`); this package does the rest, one concern per module:

    inputs    validate, hash, plan or skip each input           (CGPUJob.prepare_local)
    plan      pack parts, check space, upload, record the plan  (CGPUJob.upload)
    polling   launch, poll until done, stop, fetch logs, tidy   (CGPUJob.run_remote, download, cleanup)
    delivery  fetch finished chunks, move outputs, ledger        (while polling)
    settle    final statuses, JobResult, summary and report     (CGPUJob.finish)

Each function takes the job (which holds the batch's state: items, what was seen of the runtime) and, where
it talks to the runtime, the transport.
"""
