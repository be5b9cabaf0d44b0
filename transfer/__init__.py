"""transfer: identity-adaptive expression transfer (ExpPortrait §3.2) on fitted HeadReps.

``transfer.model`` (expression encoder E, vertex MLP G, TransferModel), ``transfer.dataset`` (samples from
HeadReps), ``transfer.train`` (TrainConfig, train), ``transfer.drive`` (B performing A's motion); the
``transfer`` command is ``transfer.cli``.
"""
