"""`marketplace payments ...`: card payment housekeeping."""

from __future__ import annotations

import click

from ..cli import app_state, fail, handle_errors, session_scope
from . import webhooks


@click.group()
def payments() -> None:
    """Card payments (Stripe)."""


@payments.command("reconcile")
@handle_errors
def reconcile() -> None:
    """Ask Stripe for the state of every open card payment and bring the marketplace in line
    (for webhook events that never arrived). Prints one line per payment."""
    gateway = app_state().payment_gateway
    if gateway is None:
        fail("card payments are not configured (set STRIPE_API_KEY)")
    with session_scope() as session:
        outcomes = webhooks.reconcile(session, gateway)
    for outcome in outcomes:
        click.echo(outcome)
    click.echo(f"reconciled {len(outcomes)} open card payment(s)", err=True)
