"""Batches: CreateBatch, GetBatch, ListBatches, UpdateBatch, SuspendBatch,
ResumeBatch, DeleteBatch (workflows.py has what they share with triggers)."""

from .workflows import Workflows

BATCHES = Workflows("batch", "batches", "Batches", "Batch", "batch")
ACTIONS = BATCHES.actions("Batch", "Batches")
