"""Triggers: CreateTrigger, GetTrigger, ListTriggers, UpdateTrigger, SuspendTrigger,
ResumeTrigger, DeleteTrigger (workflows.py has what they share with batches)."""

from .workflows import Workflows

TRIGGERS = Workflows("trigger", "triggers", "Triggers", "Trigger", "trigger")
ACTIONS = TRIGGERS.actions("Trigger", "Triggers")
