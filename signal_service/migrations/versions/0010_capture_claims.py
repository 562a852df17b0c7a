"""capture claims: each ClaimCapture numbered, so that reports are idempotent per claim

Revision ID: 0010_capture_claims
Revises: 0009_client_certificate
Create Date: 2026-12-07 09:40:00

screenshots.claim counts the claims that proceeded; ClaimCapture returns it and ReportCapture names it.
A FAILED or PROCESSING report from an older claim is refused (FAILED_PRECONDITION STALE_CLAIM), a repeated
FAILED of the current claim changes nothing, and COMPLETED is always taken (the object key is the
signal's, whichever claim uploaded it). 0 means "not known" (rows before this revision, older workers).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_capture_claims"
down_revision = "0009_client_certificate"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("screenshots", sa.Column("claim", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("screenshots", "claim")
